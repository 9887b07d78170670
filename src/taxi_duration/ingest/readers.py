"""Read one source file or folder as it is: CSV as strings (bad lines kept), Parquet with its own types."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from taxi_duration.errors import (
    UnreadableInputError,
    spark_error_summary,
)

CORRUPT_RECORD = "_corrupt_record"
_DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".txt")
_REMOTE_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/")


@dataclass(frozen=True)
class Source:
    """One input dataset: a file, or a folder of part files written by Spark."""

    path: str
    kind: str  # "csv" | "parquet"

    @property
    def source_id(self) -> str:
        """A short, path-safe, stable id: the file name plus a hash of the full path. Local paths are resolved
        (symlinks, `..`) when the source is listed, so one file has one id however it is named."""
        base = os.path.basename(self.path.rstrip("/")) or "input"
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", base)[:60]
        digest = hashlib.sha1(self.path.encode("utf-8")).hexdigest()[:8]
        return f"{stem}-{digest}"

    def fingerprint(self) -> dict[str, int]:
        """Size and modification time of a local file (of its part files, for a folder), recorded with the
        commit that ingested it: which version of the file the tables hold. Empty for remote sources."""
        if _REMOTE_SCHEME.match(self.path) or not os.path.exists(self.path):
            return {}
        if os.path.isfile(self.path):
            stat = os.stat(self.path)
            return {"size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        stats = [entry.stat() for entry in os.scandir(self.path) if entry.is_file()]
        return {
            "size_bytes": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
        }


def _kind_of(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    return None


def _folder_kind(path: str) -> str | None:
    """The kind of a folder of Spark part files, from the part files it holds."""
    kinds = {_kind_of(name) for name in os.listdir(path) if not name.startswith(("_", "."))}
    kinds.discard(None)
    return kinds.pop() if len(kinds) == 1 else None


def expand_sources(paths: list[str]) -> list[Source]:
    """Files, folders and globs -> datasets. Local paths are listed here; remote URIs go to Spark as given."""
    sources: list[Source] = []
    for given in paths:
        if _REMOTE_SCHEME.match(given) and not given.startswith("file:"):
            kind = _kind_of(given) or "parquet"
            sources.append(Source(given, kind))
            continue
        local = given.removeprefix("file://").removeprefix("file:")
        matches = sorted(glob.glob(local)) if any(ch in local for ch in "*?[") else [local]
        if not matches or not all(os.path.exists(match) for match in matches):
            raise UnreadableInputError(f"{given}: no such file or folder")
        for match in matches:
            sources.extend(_expand_local(os.path.realpath(match), given))
    if not sources:
        raise UnreadableInputError(f"{', '.join(paths)}: no CSV or Parquet trip files found")
    # one file named twice (directly, through a symlink, through its folder) is read once
    return list(dict.fromkeys(sources))


def _expand_local(path: str, given: str) -> list[Source]:
    path = os.path.realpath(path)  # a symlinked file in a folder is the file it points to
    if os.path.isfile(path):
        kind = _kind_of(path)
        if kind is None:
            raise UnreadableInputError(f"{given}: expected a .csv, .csv.gz or .parquet file, found '{path}'")
        return [Source(path, kind)]
    folder_kind = _folder_kind(path)
    if folder_kind and any(name.startswith("part-") for name in os.listdir(path)):
        return [Source(path, folder_kind)]
    found: list[Source] = []
    for name in sorted(os.listdir(path)):
        if name.startswith(("_", ".")):
            continue
        found.extend(_expand_local(os.path.join(path, name), given) if _is_data(path, name) else [])
    return found


def _is_data(folder: str, name: str) -> bool:
    full = os.path.join(folder, name)
    return os.path.isdir(full) or name.lower().endswith(_DATA_SUFFIXES)


def read_header(spark: SparkSession, source: Source) -> StructType:
    """The columns of a source as stored, read cheaply (CSV header line: all strings; Parquet footer: its types).
    Handed to `read_raw`, it spares every later read of the source a schema inference (a Spark job per read)."""
    try:
        if source.kind == "parquet":
            schema = spark.read.parquet(source.path).schema
        else:
            schema = spark.read.option("header", True).csv(source.path).schema
    except (PySparkException, Py4JJavaError) as exc:  # corrupt footer, unreadable file, permissions, ...
        raise UnreadableInputError(
            f"{source.path}: cannot read as {source.kind} ({spark_error_summary(exc)})"
        ) from None
    if not schema.fields:
        raise UnreadableInputError(f"{source.path}: empty file, expected a header line with the trip columns")
    return schema


def read_raw(spark: SparkSession, source: Source, header: StructType) -> DataFrame:
    """The rows as stored, with the columns `read_header` found. CSV values stay strings and lines with the wrong
    field count are kept, marked in `_corrupt_record`, so the quality stage can quarantine them instead of Spark
    dropping them."""
    if source.kind == "parquet":
        return spark.read.schema(header).parquet(source.path)
    schema = StructType([StructField(name, StringType(), True) for name in header.fieldNames()])
    schema = schema.add(StructField(CORRUPT_RECORD, StringType(), True))
    return (
        spark.read.schema(schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_RECORD)
        .csv(source.path)
    )
