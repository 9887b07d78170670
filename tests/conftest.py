"""One session-scoped Spark for all tests: local[2], UI off, 2 shuffle partitions, quick JIT."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from taxi_duration.spark import SESSION_TIME_ZONE, use_session_time_zone_in_python

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
use_session_time_zone_in_python()

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "taxi_duration" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("taxi-duration-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", SESSION_TIME_ZONE)
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.memory", "2g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config(
            # quick JIT (C1 only) with room for the code of a whole suite: a full cache disables the compiler and
            # the JVM runs interpreted (and prints its warning on stdout, into the CLI output tests parse)
            "spark.driver.extraJavaOptions",
            "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=512m",
        )
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


SERVED_METRICS_BY_REGIME = {
    "recorded_distance": {"rmsle": 0.31, "rmse_minutes": 5.0, "baseline_rmsle": 0.45, "rows": 100},
    "zones_only": {"rmsle": 0.38, "rmse_minutes": 7.0, "baseline_rmsle": 0.45, "rows": 100},
}


@pytest.fixture(scope="session")
def served_models(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real models for serving tests, fitted once: GBT exported as versions 7 and 8 (the same trees) and a
    different GBT as version 9 (a challenger that disagrees)."""
    import random
    from datetime import datetime, timedelta

    from taxi_duration.columns import TRIP_COLUMNS
    from taxi_duration.features.definitions import with_label
    from taxi_duration.params import TrainParams
    from taxi_duration.schema import TRIP_SCHEMA
    from taxi_duration.serve.export import export_model
    from taxi_duration.train.pipeline import build_pipeline
    from taxi_duration.train.travel_times import build_travel_times

    rng = random.Random(11)
    rows = []
    for i in range(120):
        trip: dict[str, object] = dict.fromkeys(TRIP_COLUMNS)
        pickup = datetime(2024, 1, 1, 6) + timedelta(hours=rng.randrange(24 * 300))
        miles = round(rng.uniform(0.5, 15.0), 2)
        trip.update(
            trip_id=i,
            service="yellow",
            source_file="hand-built",
            pickup_datetime=pickup,
            pickup_location_id=rng.randint(1, 263),
            dropoff_location_id=rng.randint(1, 263),
            trip_distance=None if i % 4 == 0 else miles,
            duration_s=float(round((120 + 170 * miles) * rng.uniform(0.8, 1.2))),
        )
        rows.append(tuple(trip[c] for c in TRIP_COLUMNS))
    root = tmp_path_factory.mktemp("served-models")
    train = spark.createDataFrame(rows, TRIP_SCHEMA).transform(with_label)
    travel_times = build_travel_times(train, min_trips=1)  # the pair features as train embeds them
    out: dict[str, Path] = {}
    for name, params in (("a", {"maxIter": 4, "maxDepth": 3}), ("b", {"maxIter": 2, "maxDepth": 2})):
        build_pipeline("gbt", TrainParams(gbt=params), travel_times).fit(train).write().save(str(root / name))
    for version, fitted in (("7", "a"), ("8", "a"), ("9", "b")):
        out[version] = export_model(
            root / fitted, root / f"v{version}", "taxi-duration", version, {"rmsle": 0.31}, SERVED_METRICS_BY_REGIME
        )
    return out


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once per session (zip import, spark-submit --py-files, the serving install)."""
    import subprocess
    import sys

    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w", dist, REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(dist.glob("taxi_duration_predictor-*.whl"))
