"""What every engine of the comparison workload shares: its constants, inputs, zone table, capping rule, timing."""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxi_duration.zones import BOROUGH_CODES, load_zones

ENGINES = ("pandas", "polars", "duckdb", "spark", "spark-naive")
TRAINING_ENGINES = ("pandas", "spark")
NEW_YORK = "America/New_York"
MIN_DURATION_S = 60
MAX_DURATION_S = 6 * 3600
UNKNOWN_BOROUGH = "Unknown"
EARTH_RADIUS_MILES = 3958.8
TRAIN_LAST_DAY = 24  # of a 31-day month: about 77% train, 23% validate
CAP_MODULUS = 1000
VALIDATION_SHARE_OF_CAP = 4  # validation capped at train_rows / 4
FEATURES = (
    "pickup_hour",
    "pickup_weekday",
    "is_weekend",
    "trip_distance",
    "centroid_miles",
    "pickup_borough_code",
    "dropoff_borough_code",
)
LABEL = "duration_min"
INT_COLUMNS = (
    "pickup_hour",
    "pickup_day",
    "pickup_weekday",
    "is_weekend",
    "pickup_borough_code",
    "dropoff_borough_code",
    "pickup_epoch_s",
)
FLOAT_COLUMNS = ("trip_distance", "centroid_miles", "duration_min")
BOOST_ITERATIONS, BOOST_DEPTH, LEARNING_RATE = 30, 6, 0.1
FOREST_TREES, FOREST_DEPTH, FOREST_FEATURES = 20, 10, 3
SEED = 42
EXIT_OOM = 3
PICKUP, DROPOFF = "tpep_pickup_datetime", "tpep_dropoff_datetime"
COLUMNS = (PICKUP, DROPOFF, "PULocationID", "DOLocationID", "trip_distance")
CSV_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Workload:
    """What one engine run reads and writes: the Parquet input, the CSV copy (optional), the output folder, and
    the most training trips (0: no training)."""

    parquet: str
    csv: str | None
    out: Path
    train_rows: int = 0


def zone_rows() -> list[dict[str, Any]]:
    """The zone table every engine joins: id, borough, borough code, centroid (None for 264/265)."""
    return [
        {
            "LocationID": z.location_id,
            "borough": z.borough,
            "borough_code": BOROUGH_CODES.get(z.borough, 0),
            "lat": z.centroid_lat,
            "lon": z.centroid_lon,
        }
        for z in load_zones()
    ]


def cap_threshold(cap: int, size: int) -> int:
    """k of the capping rule `pickup_epoch_s % 1000 < k` (CAP_MODULUS keeps everything)."""
    if size <= cap:
        return CAP_MODULUS
    return max(1, math.ceil(CAP_MODULUS * cap / size))


@dataclass(frozen=True)
class Models:
    """Sizes of the models both training engines fit (the rest of the hyperparameters are constants above)."""

    boost_iterations: int = BOOST_ITERATIONS
    forest_trees: int = FOREST_TREES


class Steps:
    """Wall seconds per named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


def report_dict(boroughs: list[str], trips: list[int], means: list[float]) -> dict[str, dict[str, float]]:
    return {
        str(b): {"trips": int(t), "mean_duration_s": float(m)}
        for b, t, m in sorted(zip(boroughs, trips, means, strict=True))
    }


def rmse(truth: Any, predicted: Any) -> float:
    import numpy as np

    diff = np.asarray(truth, dtype="float64") - np.asarray(predicted, dtype="float64")
    return float(np.sqrt(np.mean(diff * diff)))


def parquet_files(folder: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no .parquet files under {folder}")
    return files


def csv_files(folder: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, "**", "*.csv"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no .csv files under {folder}")
    return files
