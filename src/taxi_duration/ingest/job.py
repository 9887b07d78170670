"""The ingest job: files -> trips + quarantine + quality report. The only place ingest does I/O."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from taxi_duration.errors import TaxiDurationError
from taxi_duration.ingest.formats import detect_format
from taxi_duration.ingest.normalize import to_canonical
from taxi_duration.ingest.readers import Source, expand_sources, read_header, read_raw
from taxi_duration.params import QualityParams
from taxi_duration.quality.rules import REASON, REASONS, classify, to_quarantine, to_trips


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


def plan_sources(spark: SparkSession, paths: list[str]) -> list[tuple[Source, list[str]]]:
    """Every input with its columns and format, checked before anything is written."""
    planned = []
    for source in expand_sources(paths):
        columns = read_header(spark, source)
        detect_format(columns, source.path)
        planned.append((source, columns))
    return planned


def classified_frame(spark: SparkSession, planned: list[tuple[Source, list[str]]], quality: QualityParams) -> DataFrame:
    """All inputs, canonical and classified (reason null = clean), as one frame."""
    frames = []
    for source, columns in planned:
        fmt = detect_format(columns, source.path)
        raw = read_raw(spark, source, columns)
        frames.append(raw.transform(to_canonical(fmt, source)).transform(classify(quality)))
    return reduce(lambda a, b: a.unionByName(b), frames)


def _raw_row_count(spark: SparkSession, planned: list[tuple[Source, list[str]]]) -> int:
    """Rows in the inputs, counted independently of the classification (the other side of the ledger)."""
    return sum(read_raw(spark, source, columns).count() for source, columns in planned)


def run_ingest(
    spark: SparkSession,
    paths: list[str],
    trips_path: Path | str,
    quarantine_path: Path | str,
    quality: QualityParams,
    report_path: Path | None = None,
) -> IngestReport:
    """Ingest files; re-ingesting a file replaces the partitions it wrote before."""
    planned = plan_sources(spark, paths)
    rows_in = _raw_row_count(spark, planned)

    classified = classified_frame(spark, planned, quality).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        tally = (
            classified.groupBy("source_file", "format", "service", "source", REASON)
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.collect_set(
                    F.struct(F.year("pickup_datetime").alias("y"), F.month("pickup_datetime").alias("m"))
                ).alias("months"),
            )
            .collect()
        )
        to_trips(classified).write.mode("overwrite").partitionBy("service", "year", "month", "source").parquet(
            str(trips_path)
        )
        to_quarantine(classified).write.mode("overwrite").partitionBy("source").parquet(str(quarantine_path))
    finally:
        classified.unpersist()

    report = _report(tally, rows_in, trips_path, quarantine_path)
    _remove_stale_partitions(trips_path, quarantine_path, tally)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def _report(tally: list, rows_in: int, trips_path: Path | str, quarantine_path: Path | str) -> IngestReport:
    by_reason = dict.fromkeys(REASONS, 0)
    files: dict[str, FileReport] = {}
    for row in tally:
        entry = files.setdefault(row["source_file"], FileReport(row["source_file"], row["format"], 0, 0, 0))
        entry.rows_in += row["rows"]
        if row[REASON] is None:
            entry.rows_clean += row["rows"]
        else:
            entry.rows_quarantined += row["rows"]
            by_reason[row[REASON]] += row["rows"]
    clean = sum(f.rows_clean for f in files.values())
    quarantined = sum(f.rows_quarantined for f in files.values())
    if rows_in != clean + quarantined:
        raise ReconciliationError(
            f"ingest counts do not reconcile: rows_in {rows_in} != clean {clean} + quarantined {quarantined}"
        )
    return IngestReport(
        rows_in=rows_in,
        rows_clean=clean,
        rows_quarantined=quarantined,
        by_reason={reason: count for reason, count in by_reason.items() if count},
        files=sorted(files.values(), key=lambda f: f.path),
        trips_path=str(trips_path),
        quarantine_path=str(quarantine_path),
        ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _local(path: Path | str) -> str | None:
    text = str(path)
    if "://" in text and not text.startswith("file:"):
        return None
    return text.removeprefix("file://").removeprefix("file:")


def _remove_stale_partitions(trips_path: Path | str, quarantine_path: Path | str, tally: list) -> None:
    """After a successful write, drop partitions a source wrote in an earlier ingest but not in this one.

    Dynamic partition overwrite replaces the partitions this ingest wrote; a re-ingested file whose trips moved
    to other months would otherwise leave its old rows behind. Only local paths are tidied here.
    """
    root, quarantine_root = _local(trips_path), _local(quarantine_path)
    if root is None or quarantine_root is None:
        return
    written = {
        (row["service"], str(month["y"]), str(month["m"]), row["source"])
        for row in tally
        if row[REASON] is None
        for month in row["months"]
    }
    sources = {row["source"] for row in tally}
    with_quarantine = {row["source"] for row in tally if row[REASON] is not None}
    for source in sources - with_quarantine:
        shutil.rmtree(os.path.join(quarantine_root, f"source={source}"), ignore_errors=True)
    for service_dir in Path(root).glob("service=*"):
        for source_dir in service_dir.glob("year=*/month=*/source=*"):
            source = source_dir.name.removeprefix("source=")
            year = source_dir.parent.parent.name.removeprefix("year=")
            month = source_dir.parent.name.removeprefix("month=")
            key = (service_dir.name.removeprefix("service="), year, month, source)
            if source in sources and key not in written:
                shutil.rmtree(source_dir, ignore_errors=True)
