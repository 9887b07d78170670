"""Where the stream reads and writes, and the predictions table it commits (`WORKSPACE/stream/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from taxi_duration.columns import TRIP_FIELDS
from taxi_duration.schema import struct_type
from taxi_duration.stream.sources import LANDED_AT

BATCH_ID = "batch_id"

_TRIP_FIELD = {spec[0]: spec for spec in TRIP_FIELDS}
_SCORED = ("trip_id", "service", "pickup_datetime", "pickup_location_id", "dropoff_location_id", "trip_distance")
# What the stream writes per trip: the batch score columns (the trip's own with their canonical types), plus where
# and when the trip landed.
PREDICTIONS_FIELDS: tuple[tuple[str, str, bool], ...] = (
    *(_TRIP_FIELD[name] for name in _SCORED),
    ("predicted_duration_minutes", "double", True),
    ("actual_duration_minutes", "double", True),
    ("model_name", "string", False),
    ("model_version", "string", False),
    _TRIP_FIELD["source_file"],
    (LANDED_AT, "timestamp", True),
)
PREDICTIONS_SCHEMA = struct_type(PREDICTIONS_FIELDS)
PREDICTIONS_TABLE_SCHEMA = struct_type([*PREDICTIONS_FIELDS, (BATCH_ID, "bigint", True)])


@dataclass(frozen=True)
class StreamPaths:
    """Where the stream reads and writes, all under `WORKSPACE/stream/` unless the landing folder is given."""

    root: Path
    landing: Path

    @classmethod
    def under(cls, workspace: Path, landing: Path | None = None) -> StreamPaths:
        root = (workspace / "stream").resolve()
        return cls(root=root, landing=(landing or root / "landing").resolve())

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def borough_windows(self) -> Path:
        return self.root / "borough_windows"

    @property
    def commits(self) -> Path:
        return self.root / "commits"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def progress(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def skipped_files(self) -> Path:
        return self.root / "skipped_files.jsonl"

    def checkpoint(self, query: str) -> Path:
        return self.root / "checkpoints" / query

    def make(self) -> None:
        for folder in (self.landing, self.predictions, self.quarantine, self.borough_windows, self.commits):
            folder.mkdir(parents=True, exist_ok=True)


def read_stream_predictions(spark: SparkSession, path: Path | str) -> DataFrame:
    return spark.read.schema(PREDICTIONS_TABLE_SCHEMA).parquet(str(path))
