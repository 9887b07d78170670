"""The ingest job: files -> trips + quarantine + quality report. The only place ingest does I/O."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from taxi_duration import lakehouse
from taxi_duration.errors import ConfigError, TaxiDurationError
from taxi_duration.faults import crash_point
from taxi_duration.ingest.formats import TripFormat, detect_format
from taxi_duration.ingest.normalize import to_canonical
from taxi_duration.ingest.readers import Source, expand_sources, read_header, read_raw
from taxi_duration.params import QualityParams
from taxi_duration.quality.rules import (
    REASON,
    REASONS,
    classify,
    repeated_ids,
    to_quarantine,
    to_trips,
    with_row_number,
)
from taxi_duration.schema import PARTITION_COLUMNS, QUARANTINE_SCHEMA, TRIPS_TABLE_SCHEMA
from taxi_duration.spark import BYPASS_PARTIAL_AGGREGATION, keep_empty_branches, sql_conf, stable_file_splits


@dataclass
class FileReport:
    path: str
    format: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int


@dataclass
class IngestReport:
    """Counts that reconcile: rows_in == rows_clean + rows_quarantined, overall and per file."""

    rows_in: int
    rows_clean: int
    rows_quarantined: int
    by_reason: dict[str, int]
    files: list[FileReport] = field(default_factory=list)
    trips_path: str = ""
    quarantine_path: str = ""
    ingested_at: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ReconciliationError(TaxiDurationError):
    """Counts that do not add up: a bug, never the user's fault, but never silent either."""

    exit_code = 3


Planned = list[tuple[Source, StructType, TripFormat]]


def plan_sources(spark: SparkSession, paths: list[str]) -> Planned:
    """Every input with its columns and format, checked before anything is written."""
    planned = []
    for source in expand_sources(paths):
        header = read_header(spark, source)
        planned.append((source, header, detect_format(header.fieldNames(), source.path)))
    return planned


@dataclass(frozen=True)
class Classified:
    """What `classified_frame` hands the writes: the classified rows, and the ledger's other side."""

    frame: DataFrame  # every input's canonical rows, classified (reason null = clean)
    rows_in: dict[str, int]  # rows read per source path, counted before anything is classified


@contextmanager
def classified_frame(spark: SparkSession, planned: Planned, quality: QualityParams) -> Iterator[Classified]:
    """All inputs, canonical and classified (reason null = clean), as one frame for the writes in the block.

    The duplicate check's ids (the one shuffle of the classification) are counted once, up front, and kept for the
    block: each write then classifies in a single narrow pass over the input instead of counting them again
    (docs/benchmarks.md, "Where the time goes"). That first job also counts each input's rows (an `Observation` on
    the canonical rows, one for each row read): the count the reconciliation checks the written tables against,
    without a pass of its own."""

    numbered = [
        read_raw(spark, source, header).transform(to_canonical(fmt, source)).transform(with_row_number)
        for source, header, fmt in planned
    ]
    # canonical rows are the rows read, one for one; the writes read them without the counter (an observation
    # counts in one action only)
    counters = [Observation() for _ in planned]
    counted = [
        frame.observe(counter, F.count(F.lit(1)).alias("rows"))
        for frame, counter in zip(numbered, counters, strict=True)
    ]
    repeated: list[DataFrame] = []
    # the ids' first rows are matched by row number in later jobs: every job must split the files alike
    with sql_conf(spark, stable_file_splits(spark)):
        try:
            # one row per trip id: nothing to pre-aggregate; a file without repeated ids keeps its count
            with sql_conf(spark, {**BYPASS_PARTIAL_AGGREGATION, **keep_empty_branches(spark)}):
                repeated = [repeated_ids(frame).persist() for frame in counted]  # planned here, with the setting
                reduce(lambda a, b: a.unionByName(b), repeated).count()  # one job fills every file's cache
            rows_in = {
                source.path: _rows_read(spark, counter, source, header)
                for counter, (source, header, _) in zip(counters, planned, strict=True)
            }
            frames = [frame.transform(classify(quality, ids)) for frame, ids in zip(numbered, repeated, strict=True)]
            yield Classified(reduce(lambda a, b: a.unionByName(b), frames), rows_in)
        finally:
            for ids in repeated:
                ids.unpersist()


def _rows_read(spark: SparkSession, counter: Observation, source: Source, header: StructType) -> int:
    """The rows of one input as the observation counted them; counted by a pass of their own only if Spark did not
    report the observation (a plan that dropped the observed branch)."""
    try:
        rows = (counter.get or {}).get("rows")
    except Exception:  # Spark raises when the job ended without the metric (a JVM assertion, or Connect's own)
        rows = None
    return int(rows) if rows is not None else read_raw(spark, source, header).count()


def run_ingest(
    spark: SparkSession,
    paths: list[str],
    trips_path: Path | str,
    quarantine_path: Path | str,
    quality: QualityParams,
    report_path: Path | None = None,
) -> IngestReport:
    """Ingest files; re-ingesting a file replaces everything it wrote before.

    Both tables and the quality report are committed at once (lakehouse.py): the output is written to staging,
    counted and reconciled there, moved in and made visible by one commit; a reader never sees half an ingest.
    The input is read three times: once for the duplicate check's ids and the rows read, then once per table
    written, each a narrow pass that classifies again instead of caching the classified rows (persisting them
    measured about twice as slow on 1M trips; docs/benchmarks.md). The report is counted from what was written and
    checked per file against the rows read, so a row lost anywhere breaks the reconciliation check.
    """
    planned = plan_sources(spark, paths)
    if not (lakehouse.is_local(trips_path) and lakehouse.is_local(quarantine_path)):
        return _run_ingest_remote(spark, planned, trips_path, quarantine_path, quality, report_path)
    trips_dir, quarantine_dir = lakehouse.local_path(trips_path), lakehouse.local_path(quarantine_path)
    root = trips_dir.parent
    if quarantine_dir.parent != root:
        raise ConfigError(f"{trips_dir} and {quarantine_dir}: the trips and quarantine tables must share a folder")
    tables = (trips_dir.name, quarantine_dir.name)
    source_ids = sorted({source.source_id for source, _, _ in planned})
    with lakehouse.writer_lock(root):
        lakehouse.recover(root, tables)
        crash_point("ingest:recovered")
        staging = lakehouse.new_staging(root)
        with classified_frame(spark, planned, quality) as classified:
            to_trips(classified.frame).write.mode("overwrite").partitionBy(*PARTITION_COLUMNS).parquet(
                str(staging / tables[0])
            )
            crash_point("ingest:staged_trips")
            to_quarantine(classified.frame).write.mode("overwrite").partitionBy("source").parquet(
                str(staging / tables[1])
            )
            crash_point("ingest:staged_quarantine")
        formats = {source.path: fmt.name for source, _, fmt in planned}
        report = _report(spark, formats, source_ids, classified.rows_in, staging / tables[0], staging / tables[1])
        report.trips_path, report.quarantine_path = str(trips_path), str(quarantine_path)
        sources = {
            source.source_id: {"path": source.path, "format": fmt.name, **source.fingerprint()}
            for source, _, fmt in planned
        }
        lakehouse.publish(root, staging, sources, report.to_dict(), tables)
    if report_path is not None:
        # a copy of the committed report for people and tools; lakehouse.committed_quality_report is the truth
        _write_report(report_path, report.to_dict())
    return report


def _write_report(report_path: Path, report: dict[str, object]) -> None:
    report_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = report_path.with_name(f".{report_path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(report_path)


def _run_ingest_remote(
    spark: SparkSession,
    planned: Planned,
    trips_path: Path | str,
    quarantine_path: Path | str,
    quality: QualityParams,
    report_path: Path | None,
) -> IngestReport:
    """Remote tables (s3://, hdfs://, dbfs:/): dynamic partition overwrite in place, no commit (README limits)."""
    source_ids = sorted({source.source_id for source, _, _ in planned})
    with classified_frame(spark, planned, quality) as classified:
        to_trips(classified.frame).write.mode("overwrite").partitionBy(*PARTITION_COLUMNS).parquet(str(trips_path))
        to_quarantine(classified.frame).write.mode("overwrite").partitionBy("source").parquet(str(quarantine_path))
    formats = {source.path: fmt.name for source, _, fmt in planned}
    report = _report(spark, formats, source_ids, classified.rows_in, trips_path, quarantine_path)
    if report_path is not None:
        _write_report(report_path, report.to_dict())
    return report


def _report(
    spark: SparkSession,
    formats: dict[str, str],
    source_ids: list[str],
    rows_in: dict[str, int],
    trips_path: Path | str,
    quarantine_path: Path | str,
) -> IngestReport:
    """Counts per file and reason, read back from this ingest's partitions of both tables, reconciled per file with
    `rows_in` (the rows read from each file)."""
    mine = F.col("source").isin(*source_ids)
    clean = spark.read.schema(TRIPS_TABLE_SCHEMA).parquet(str(trips_path)).filter(mine).groupBy("source_file").count()
    rejected = (
        spark.read.schema(QUARANTINE_SCHEMA)
        .parquet(str(quarantine_path))
        .filter(mine)
        .groupBy("source_file", REASON)
        .count()
    )
    files = {path: FileReport(path, name, rows_in[path], 0, 0) for path, name in formats.items()}
    for row in clean.collect():
        files[row["source_file"]].rows_clean += row["count"]
    by_reason = dict.fromkeys(REASONS, 0)
    for row in rejected.collect():
        files[row["source_file"]].rows_quarantined += row["count"]
        by_reason[row[REASON]] += row["count"]
    for entry in files.values():
        if entry.rows_in != entry.rows_clean + entry.rows_quarantined:
            raise ReconciliationError(
                f"{entry.path}: ingest counts do not reconcile: rows_in {entry.rows_in} != clean {entry.rows_clean}"
                f" + quarantined {entry.rows_quarantined}"
            )
    clean_total = sum(f.rows_clean for f in files.values())
    quarantined = sum(f.rows_quarantined for f in files.values())
    return IngestReport(
        rows_in=sum(rows_in.values()),
        rows_clean=clean_total,
        rows_quarantined=quarantined,
        by_reason={reason: count for reason, count in by_reason.items() if count},
        files=sorted(files.values(), key=lambda f: f.path),
        trips_path=str(trips_path),
        quarantine_path=str(quarantine_path),
        ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
