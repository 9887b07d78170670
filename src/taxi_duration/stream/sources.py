"""The landing folder as a stream of lines, and one micro-batch of lines -> canonical, classified trips.

Files of any known trip format may land side by side, so a fixed stream schema cannot describe them: the stream
reads lines (`text` source, with the file each line came from), and each micro-batch finds every file's format
from its header (CSV) or its keys (JSON lines), then parses the lines with `from_csv` / `from_json` as strings,
exactly as batch ingest reads CSV, and hands them to the same normaliser and quality rules.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import reduce
from urllib.parse import unquote, urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from taxi_duration.errors import TaxiDurationError
from taxi_duration.ingest.formats import TripFormat, detect_format
from taxi_duration.ingest.normalize import to_canonical_from
from taxi_duration.ingest.readers import CORRUPT_RECORD, Source
from taxi_duration.params import QualityParams
from taxi_duration.quality.rules import classify

# Columns of the landing stream.
LINE = "value"
FILE_URI = "file_uri"
LANDED_AT = "landed_at"  # the file's modification time: replay renames finished files into place

_PATH = "_stream_source_file"
_SOURCE_ID = "_stream_source"
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz")
_PARSE_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD}


CLEAN_SOURCE = ("off", "archive", "delete")


def landing_stream(
    spark: SparkSession,
    landing: str,
    max_files_per_trigger: int | None = None,
    clean_source: str = "off",
    archive_dir: str | None = None,
) -> DataFrame:
    """New files in the landing folder as lines, each with its file and landing time. Files whose names start
    with `.` or `_` (e.g. a replay's temporary files) are not picked up until renamed. With `clean_source`
    "archive" or "delete", Spark moves or deletes a batch's files once the next batch starts: the folder a
    long-running stream lists every trigger stays small."""
    if clean_source not in CLEAN_SOURCE:
        raise TaxiDurationError(f"clean source: expected one of {', '.join(CLEAN_SOURCE)}, found '{clean_source}'")
    reader = spark.readStream.format("text")
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", max_files_per_trigger)
    if clean_source != "off":
        reader = reader.option("cleanSource", clean_source)
        if clean_source == "archive":
            if not archive_dir:
                raise TaxiDurationError("clean source 'archive' needs an archive folder")
            reader = reader.option("sourceArchiveDir", archive_dir)
    return reader.load(landing).select(
        F.col(LINE),
        F.col("_metadata.file_path").alias(FILE_URI),
        F.col("_metadata.file_modification_time").alias(LANDED_AT),
    )


def local_path(uri: str) -> str:
    """`file:/a/b%20c.csv` -> `/a/b c.csv` (the spelling batch ingest records); other URIs unchanged."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("", "file") else uri


@dataclass(frozen=True)
class LandedFile:
    """A file of the micro-batch whose format is known."""

    uri: str
    path: str
    kind: str  # "csv" | "json"
    columns: tuple[str, ...]
    fmt: TripFormat
    header_line: str | None  # CSV: the exact first line, dropped from the data

    @property
    def source_id(self) -> str:
        return Source(self.path, "csv").source_id


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not a trip file: reported and left out, the query goes on."""

    path: str
    reason: str


def _kind(path: str, first_line: str | None) -> str | None:
    lower = path.lower()
    if lower.endswith(_JSON_SUFFIXES):
        return "json"
    if lower.endswith(_CSV_SUFFIXES):
        return "csv"
    if first_line is not None and first_line.lstrip("\ufeff").lstrip().startswith("{"):
        return "json"
    return "csv" if first_line is not None and "," in first_line else None


def _first_line(spark: SparkSession, uri: str, path: str) -> str | None:
    """The file's first line as the text source reads it (a BOM kept, the line end dropped)."""
    if path == uri or path.startswith("/"):
        opener = gzip.open if path.lower().endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
                line = handle.readline()
        except OSError:
            return None
        return line.rstrip("\r\n") if line else None
    rows = spark.read.text(uri).limit(1).collect()
    return str(rows[0][0]) if rows else None


def _csv_columns(header_line: str) -> tuple[str, ...]:
    row = next(csv.reader([header_line.lstrip("\ufeff")]), [])
    return tuple(name.strip() for name in row)


def plan_files(
    spark: SparkSession, files: Iterable[str], json_keys: dict[str, list[str]]
) -> tuple[list[LandedFile], list[SkippedFile]]:
    """Each file's format, from its CSV header or the keys its JSON lines use; files of no known format are
    skipped with the same one-line explanation batch ingest gives."""
    planned: list[LandedFile] = []
    skipped: list[SkippedFile] = []
    for uri in sorted(files):
        path = local_path(uri)
        first = _first_line(spark, uri, path)
        kind = _kind(path, first)
        if first is None:
            continue  # empty file: nothing to do
        if kind is None:
            skipped.append(SkippedFile(path, f"{path}: not a CSV or JSON-lines trip file"))
            continue
        header = first if kind == "csv" else None
        columns = _csv_columns(first) if kind == "csv" else tuple(json_keys.get(uri, ()))
        try:
            if kind == "csv" and len(set(columns)) != len(columns):
                raise TaxiDurationError(f"{path}: repeated column names in the header {list(columns)}")
            fmt = detect_format(columns, path)
        except TaxiDurationError as exc:
            skipped.append(SkippedFile(path, str(exc)))
            continue
        planned.append(LandedFile(uri, path, kind, columns, fmt, header))
    return planned, skipped


def batch_files(lines: DataFrame) -> tuple[dict[str, int], dict[str, list[str]]]:
    """For a micro-batch of lines: file uri -> landing time (epoch microseconds), and file uri -> the JSON keys
    its lines use, in first-seen order (for JSON-lines files and files whose kind must be sniffed)."""
    per_file = lines.groupBy(FILE_URI).agg(F.unix_micros(F.max(LANDED_AT)).alias(LANDED_AT)).collect()
    landed = {row[FILE_URI]: int(row[LANDED_AT]) for row in per_file}
    json_uris = [uri for uri in landed if local_path(uri).lower().endswith(_JSON_SUFFIXES)]
    sniff = [uri for uri in landed if not local_path(uri).lower().endswith(_JSON_SUFFIXES + _CSV_SUFFIXES)]
    keys: dict[str, list[str]] = {}
    wanted = json_uris + sniff
    if wanted:
        rows = (
            lines.filter(F.col(FILE_URI).isin(*wanted))
            .select(FILE_URI, F.posexplode(F.json_object_keys(F.col(LINE))).alias("position", "key"))
            .groupBy(FILE_URI, "key")
            .agg(F.min("position").alias("position"))
            .collect()
        )
        for row in sorted(rows, key=lambda r: (r[FILE_URI], r["position"], r["key"])):
            keys.setdefault(row[FILE_URI], []).append(row["key"])
    return landed, keys


def _string_schema(columns: Iterable[str]) -> StructType:
    fields = [StructField(name, StringType(), True) for name in columns]
    return StructType([*fields, StructField(CORRUPT_RECORD, StringType(), True)])


def _mapped(column: Column, mapping: dict[str, str]) -> Column:
    pairs = [F.lit(item) for key, value in mapping.items() for item in (key, value)]
    return F.element_at(F.create_map(*pairs), column)


def _raw_frame(lines: DataFrame, group: list[LandedFile]) -> DataFrame:
    """The lines of files sharing one layout, parsed as strings like batch ingest reads them: a line with the
    wrong field count (CSV) or that is not a JSON object keeps its text in `_corrupt_record`."""
    first = group[0]
    schema = _string_schema(first.columns)
    uris = [f.uri for f in group]
    mine = lines.filter(F.col(FILE_URI).isin(*uris) & (F.trim(F.col(LINE)) != F.lit("")))
    if first.kind == "csv":
        mine = mine.filter(F.col(LINE) != F.lit(first.header_line))
        parsed = F.from_csv(F.col(LINE), schema.simpleString(), _PARSE_OPTIONS)
    else:
        parsed = F.from_json(F.col(LINE), schema, _PARSE_OPTIONS)
    return mine.select(
        parsed.alias("_row"),
        _mapped(F.col(FILE_URI), {f.uri: f.path for f in group}).alias(_PATH),
        _mapped(F.col(FILE_URI), {f.uri: f.source_id for f in group}).alias(_SOURCE_ID),
    ).select("_row.*", _PATH, _SOURCE_ID)


_LayoutKey = tuple[str, str, tuple[str, ...], str | None]


class BatchClassifier:
    """A micro-batch's lines -> canonical trips classified by the quality rules, as batch ingest classifies a
    file. Files are classified per layout before the union, as in batch: their raw rows differ, the JSON of them
    does not.

    The normalise and classify steps of each layout are built once and reused for every micro-batch: building
    their column expressions takes thousands of calls into Spark (about half a second a batch), applying them a
    handful."""

    def __init__(self, quality: QualityParams) -> None:
        self._classify = classify(quality)
        self._canonical: dict[_LayoutKey, Callable[[DataFrame], DataFrame]] = {}

    def __call__(self, lines: DataFrame, files: list[LandedFile]) -> DataFrame | None:
        """None if the batch holds no trip file."""
        groups: dict[_LayoutKey, list[LandedFile]] = {}
        for landed in files:
            groups.setdefault((landed.kind, landed.fmt.name, landed.columns, landed.header_line), []).append(landed)
        frames = [
            _raw_frame(lines, group).transform(self._canonical_step(key, group[0].fmt)).transform(self._classify)
            for key, group in groups.items()
        ]
        if not frames:
            return None
        return reduce(lambda a, b: a.unionByName(b), frames)

    def _canonical_step(self, key: _LayoutKey, fmt: TripFormat) -> Callable[[DataFrame], DataFrame]:
        if key not in self._canonical:
            self._canonical[key] = to_canonical_from(
                fmt, F.col(_PATH), F.col(_SOURCE_ID), bookkeeping=(_PATH, _SOURCE_ID)
            )
        return self._canonical[key]


def landing_times(files: dict[str, int]) -> dict[str, int]:
    """File uri -> landing time (epoch microseconds), keyed by the local path the trips record in `source_file`."""
    return {local_path(uri): landed for uri, landed in files.items()}
