"""Score a CSV/Parquet/JSONL file in-process with the exported model: no Spark, no JVM."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from taxi_duration.errors import UnknownFormatError, UnreadableInputError
from taxi_duration.features.definitions import FEATURE_INPUT_COLUMNS
from taxi_duration.ingest.formats import detect_format
from taxi_duration.serve.parquet import require_pyarrow
from taxi_duration.serve.predictor import ExportedModel

_NEEDED = FEATURE_INPUT_COLUMNS


def read_trip_file(path: Path) -> pd.DataFrame:
    """A file of trips as pandas: CSV, Parquet or JSON lines, by extension."""
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")) or path.is_dir():
            require_pyarrow(str(path))
            return pd.read_parquet(path)
        if name.endswith((".jsonl", ".ndjson", ".json")):
            return pd.read_json(path, lines=True)
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path, low_memory=False)
    except FileNotFoundError:
        raise UnreadableInputError(f"{path}: no such file or folder") from None
    except (ValueError, OSError) as exc:
        raise UnreadableInputError(f"{path}: cannot read ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    raise UnreadableInputError(f"{path}: expected .csv, .csv.gz, .parquet or .jsonl, found '{path.suffix}'")


def to_canonical_frame(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """TLC/Kaggle column names -> the canonical ones the model reads; canonical files pass through."""
    if {"pickup_datetime"} <= set(frame.columns) and (
        {"pickup_location_id", "dropoff_location_id"} <= set(frame.columns)
        or {"pickup_latitude", "dropoff_latitude"} <= set(frame.columns)
    ):
        return frame
    try:
        fmt = detect_format(frame.columns, str(path))
    except UnknownFormatError:
        raise UnknownFormatError(
            f"{path}: columns match no known trip format nor the canonical trip columns "
            f"(pickup_datetime with pickup/dropoff_location_id or coordinates); found [{', '.join(frame.columns[:25])}]"
        ) from None
    renamed = {}
    for canonical in _NEEDED:
        source = fmt.source_column(canonical, frame.columns)
        if source is not None:
            renamed[canonical] = frame[source]
    out = pd.DataFrame(renamed, index=frame.index)
    if "pickup_datetime" in out:
        out["pickup_datetime"] = pd.to_datetime(out["pickup_datetime"], errors="coerce")
    for column in _NEEDED[1:]:
        if column in out:
            out[column] = pd.to_numeric(out[column], errors="coerce")
    return out


def predict_file(model: ExportedModel, path: Path) -> pd.DataFrame:
    """The file's rows with `predicted_duration_minutes`, `model_name`, `model_version` appended."""
    frame = read_trip_file(path)
    canonical = to_canonical_frame(frame, path)
    result = frame.copy()
    result["predicted_duration_minutes"] = model.predict_batch(canonical)
    result["model_name"] = model.name
    result["model_version"] = model.version
    return result
