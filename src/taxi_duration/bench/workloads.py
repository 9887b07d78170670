"""The engine comparison workload, defined once and implemented per engine (pandas, Polars, DuckDB, Spark).

Input: one month of generated TLC yellow trips (`taxi-duration generate --months 1`), as Parquet and as CSV.
Every engine computes exactly this:

1. **Borough report** (Parquet): read `tpep_pickup_datetime`, `tpep_dropoff_datetime`, `PULocationID`,
   `DOLocationID`, `trip_distance`; `duration_s` = dropoff - pickup in seconds (instants, so a daylight-saving
   change does not distort it); valid trips have both times and `MIN_DURATION_S <= duration_s <= MAX_DURATION_S`.
   Valid trips LEFT JOIN the zone table (package data) on `PULocationID = LocationID`, borough `'Unknown'` when
   the id is not in the table; per pickup borough: `trips` (count) and `mean_duration_s`. Also `rows_read` and
   `valid_trips`.
2. **Features** of the valid trips, written as a Parquet table: `pickup_hour` (0-23) and `pickup_day` (day of
   month) and `pickup_weekday` (1 = Monday .. 7) in New York wall-clock time, `is_weekend` (weekday 6 or 7),
   `trip_distance`, `centroid_miles` (haversine between the pickup and dropoff zone centroids, 0 when either zone
   has no centroid), `pickup_borough_code` / `dropoff_borough_code` (`zones.BOROUGH_CODES`, 0 when unknown),
   `pickup_epoch_s` (Unix seconds of the pickup), label `duration_min`. Summary: row count and the sum of every
   column (integers exact).
3. **Training** (pandas with scikit-learn, Spark with MLlib; Polars and DuckDB stop at the features): trips
   picked up on days 1..`TRAIN_LAST_DAY` train, later ones validate (time-based split). Both sets are capped by
   the same deterministic rule so all engines use the same trips: keep a trip when `pickup_epoch_s % 1000 < k`,
   `k = ceil(1000 * cap / size)` (cap `train_rows` for training, `train_rows / 4` for validation). Models: gradient
   boosting (`BOOST_ITERATIONS` trees of depth `BOOST_DEPTH`, learning rate 0.1) and random forest (`FOREST_TREES`
   trees of depth `FOREST_DEPTH`, `FOREST_FEATURES` features per split) on `FEATURES`; RMSE of `duration_min`
   on the validation trips.
4. **CSV load**: read the CSV copy with the five columns typed on read (times as `yyyy-MM-dd HH:mm:ss` wall-clock
   strings), compute `duration_s` and the valid trips as in 1; summary: `rows_read`, `valid_trips`,
   `sum_duration_s`. The CSV holds wall-clock New York times: pandas, Polars and DuckDB subtract them as naive
   times, Spark as New York times; they agree unless the month has a daylight-saving change (January does not).

Timestamps: the generator writes Parquet from a Spark session in New York time as INT96, i.e. UTC instants
without a zone annotation. Spark reads them back as instants and shows New York time; pyarrow (pandas), Polars
and DuckDB read the same values as *naive UTC*, so those engines convert UTC -> America/New_York before taking
hour, weekday and day (checked: without it the hour differs by 5 for January trips).

Run one engine in this process: `python -m taxi_duration.bench.workloads ENGINE --parquet DIR --csv DIR --out DIR`;
prints one JSON object (results and per-step seconds). A memory failure exits with `EXIT_OOM`.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
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


def _report_dict(boroughs: list[str], trips: list[int], means: list[float]) -> dict[str, dict[str, float]]:
    return {
        str(b): {"trips": int(t), "mean_duration_s": float(m)}
        for b, t, m in sorted(zip(boroughs, trips, means, strict=True))
    }


def _rmse(truth: Any, predicted: Any) -> float:
    import numpy as np

    diff = np.asarray(truth, dtype="float64") - np.asarray(predicted, dtype="float64")
    return float(np.sqrt(np.mean(diff * diff)))


def _parquet_files(folder: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no .parquet files under {folder}")
    return files


def _csv_files(folder: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, "**", "*.csv"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no .csv files under {folder}")
    return files


# ---------------------------------------------------------------------------------------------------- pandas


def run_pandas(
    parquet: str, csv: str | None, out: Path, train_rows: int, steps: Steps, models: Models | None = None
) -> dict[str, Any]:
    """The workload in pandas (+ NumPy, scikit-learn): everything in memory."""
    import numpy as np
    import pandas as pd

    results: dict[str, Any] = {}
    zones = pd.DataFrame(zone_rows())
    with steps.step("load"):
        trips = pd.read_parquet(parquet, columns=list(COLUMNS))
    with steps.step("borough_report"):
        results["rows_read"] = len(trips)
        duration = (trips[DROPOFF] - trips[PICKUP]).dt.total_seconds()
        valid = duration.between(MIN_DURATION_S, MAX_DURATION_S)
        trips = trips[valid].copy()
        trips["duration_s"] = duration[valid].astype("int64")
        results["valid_trips"] = len(trips)
        joined = trips[["PULocationID", "duration_s"]].merge(
            zones[["LocationID", "borough"]], how="left", left_on="PULocationID", right_on="LocationID"
        )
        joined["borough"] = joined["borough"].fillna(UNKNOWN_BOROUGH)
        report = joined.groupby("borough")["duration_s"].agg(["count", "mean"])
        results["borough_report"] = _report_dict(list(report.index), list(report["count"]), list(report["mean"]))
        del joined
    with steps.step("features"):
        # INT96 Parquet timestamps arrive as naive UTC: make them New York wall-clock time
        local = trips[PICKUP].dt.tz_localize("UTC").dt.tz_convert(NEW_YORK)
        pickup_zone = zones.set_index("LocationID").reindex(trips["PULocationID"].to_numpy())
        dropoff_zone = zones.set_index("LocationID").reindex(trips["DOLocationID"].to_numpy())
        lat1, lon1 = np.radians(pickup_zone["lat"].to_numpy(float)), np.radians(pickup_zone["lon"].to_numpy(float))
        lat2, lon2 = np.radians(dropoff_zone["lat"].to_numpy(float)), np.radians(dropoff_zone["lon"].to_numpy(float))
        a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
        miles = 2 * EARTH_RADIUS_MILES * np.arcsin(np.sqrt(a))
        weekday = local.dt.dayofweek.to_numpy() + 1
        features = pd.DataFrame(
            {
                "pickup_hour": local.dt.hour.to_numpy().astype("int64"),
                "pickup_day": local.dt.day.to_numpy().astype("int64"),
                "pickup_weekday": weekday.astype("int64"),
                "is_weekend": (weekday >= 6).astype("int64"),
                "trip_distance": trips["trip_distance"].to_numpy(float),
                "centroid_miles": np.nan_to_num(miles, nan=0.0),
                "pickup_borough_code": pickup_zone["borough_code"].fillna(0).to_numpy().astype("int64"),
                "dropoff_borough_code": dropoff_zone["borough_code"].fillna(0).to_numpy().astype("int64"),
                "pickup_epoch_s": trips[PICKUP].to_numpy().astype("datetime64[s]").astype("int64"),
                LABEL: trips["duration_s"].to_numpy() / 60.0,
            }
        )
        del trips, local, pickup_zone, dropoff_zone
        features.to_parquet(out / "features", index=False, partition_cols=None)
        results["features"] = {
            "rows": len(features),
            **{c: int(features[c].sum()) for c in INT_COLUMNS},
            **{c: float(features[c].sum()) for c in FLOAT_COLUMNS},
        }
    if train_rows > 0:
        with steps.step("train"):
            results["training"] = _train_sklearn(features, train_rows, models or Models())
    del features
    if csv:
        with steps.step("load_csv"):
            frames = [
                pd.read_csv(path, usecols=list(COLUMNS), parse_dates=[PICKUP, DROPOFF], date_format=CSV_TIME_FORMAT)
                for path in _csv_files(csv)
            ]
            raw = pd.concat(frames, ignore_index=True)
            del frames
            seconds = (raw[DROPOFF] - raw[PICKUP]).dt.total_seconds()
            ok = seconds.between(MIN_DURATION_S, MAX_DURATION_S)
            results["csv"] = {
                "rows_read": len(raw),
                "valid_trips": int(ok.sum()),
                "sum_duration_s": int(seconds[ok].astype("int64").sum()),
            }
    return results


def _train_sklearn(features: Any, train_rows: int, models: Models) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    is_train = features["pickup_day"] <= TRAIN_LAST_DAY
    train, valid = features[is_train], features[~is_train]
    k_train = cap_threshold(train_rows, len(train))
    k_valid = cap_threshold(train_rows // VALIDATION_SHARE_OF_CAP, len(valid))
    train = train[train["pickup_epoch_s"] % CAP_MODULUS < k_train]
    valid = valid[valid["pickup_epoch_s"] % CAP_MODULUS < k_valid]
    x_train, y_train = train[list(FEATURES)].to_numpy(float), train[LABEL].to_numpy(float)
    x_valid, y_valid = valid[list(FEATURES)].to_numpy(float), valid[LABEL].to_numpy(float)
    result: dict[str, Any] = {"train_rows": len(train), "valid_rows": len(valid)}
    start = time.perf_counter()
    boost = HistGradientBoostingRegressor(
        max_iter=models.boost_iterations, max_depth=BOOST_DEPTH, learning_rate=LEARNING_RATE, early_stopping=False
    )
    boost.fit(x_train, y_train)
    result["boost_rmse"] = _rmse(y_valid, boost.predict(x_valid))
    result["boost_seconds"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    forest = RandomForestRegressor(
        n_estimators=models.forest_trees,
        max_depth=FOREST_DEPTH,
        max_features=FOREST_FEATURES,
        n_jobs=os.cpu_count(),
        random_state=SEED,
    )
    forest.fit(x_train, y_train)
    result["forest_rmse"] = _rmse(y_valid, forest.predict(x_valid))
    result["forest_seconds"] = round(time.perf_counter() - start, 3)
    return result


# ---------------------------------------------------------------------------------------------------- Polars


def run_polars(parquet: str, csv: str | None, out: Path, train_rows: int, steps: Steps) -> dict[str, Any]:
    """The workload in Polars: lazy queries, collected per step."""
    import polars as pl

    results: dict[str, Any] = {}
    zones = pl.DataFrame(zone_rows(), schema_overrides={"LocationID": pl.Int32})
    duration = (pl.col(DROPOFF) - pl.col(PICKUP)).dt.total_seconds()
    scan = pl.scan_parquet(_parquet_files(parquet)).select(COLUMNS)
    valid = scan.with_columns(duration.alias("duration_s")).filter(
        pl.col("duration_s").is_between(MIN_DURATION_S, MAX_DURATION_S)
    )
    with steps.step("borough_report"):
        counts = pl.concat(
            [scan.select(pl.len().alias("n")), valid.select(pl.len().alias("n"))], how="vertical"
        ).collect()
        results["rows_read"], results["valid_trips"] = int(counts["n"][0]), int(counts["n"][1])
        report = (
            valid.join(
                zones.lazy().select("LocationID", "borough"), how="left", left_on="PULocationID", right_on="LocationID"
            )
            .with_columns(pl.col("borough").fill_null(UNKNOWN_BOROUGH))
            .group_by("borough")
            .agg(pl.len().alias("trips"), pl.col("duration_s").mean().alias("mean"))
            .collect()
        )
        results["borough_report"] = _report_dict(
            report["borough"].to_list(), report["trips"].to_list(), report["mean"].to_list()
        )
    with steps.step("features"):
        pickup_zones = zones.lazy().select(
            pl.col("LocationID").alias("PULocationID"),
            pl.col("lat").alias("lat1"),
            pl.col("lon").alias("lon1"),
            pl.col("borough_code").alias("pickup_borough_code"),
        )
        dropoff_zones = zones.lazy().select(
            pl.col("LocationID").alias("DOLocationID"),
            pl.col("lat").alias("lat2"),
            pl.col("lon").alias("lon2"),
            pl.col("borough_code").alias("dropoff_borough_code"),
        )
        local = pl.col(PICKUP).dt.replace_time_zone("UTC").dt.convert_time_zone(NEW_YORK)
        lat1, lat2 = pl.col("lat1").radians(), pl.col("lat2").radians()
        a = ((lat2 - lat1) / 2).sin() ** 2 + lat1.cos() * lat2.cos() * (
            ((pl.col("lon2").radians() - pl.col("lon1").radians()) / 2).sin() ** 2
        )
        features = (
            valid.join(pickup_zones, how="left", on="PULocationID")
            .join(dropoff_zones, how="left", on="DOLocationID")
            .select(
                local.dt.hour().cast(pl.Int64).alias("pickup_hour"),
                local.dt.day().cast(pl.Int64).alias("pickup_day"),
                local.dt.weekday().cast(pl.Int64).alias("pickup_weekday"),
                (local.dt.weekday() >= 6).cast(pl.Int64).alias("is_weekend"),
                pl.col("trip_distance").cast(pl.Float64),
                (2 * EARTH_RADIUS_MILES * a.sqrt().arcsin()).fill_null(0.0).alias("centroid_miles"),
                pl.col("pickup_borough_code").fill_null(0).cast(pl.Int64),
                pl.col("dropoff_borough_code").fill_null(0).cast(pl.Int64),
                pl.col(PICKUP).dt.epoch("s").cast(pl.Int64).alias("pickup_epoch_s"),
                (pl.col("duration_s") / 60.0).alias(LABEL),
            )
        )
        target = out / "features"
        target.mkdir(parents=True, exist_ok=True)
        features.sink_parquet(target / "part-0.parquet")
        written = pl.scan_parquet(target / "part-0.parquet")
        summary = written.select(
            pl.len().alias("rows"),
            *[pl.col(c).sum() for c in INT_COLUMNS],
            *[pl.col(c).sum() for c in FLOAT_COLUMNS],
        ).collect()
        row = summary.row(0, named=True)
        results["features"] = {
            "rows": int(row["rows"]),
            **{c: int(row[c]) for c in INT_COLUMNS},
            **{c: float(row[c]) for c in FLOAT_COLUMNS},
        }
    if csv:
        with steps.step("load_csv"):
            raw = pl.scan_csv(
                _csv_files(csv),
                schema_overrides={PICKUP: pl.String, DROPOFF: pl.String, "trip_distance": pl.Float64},
            ).select(
                pl.col(PICKUP).str.to_datetime(CSV_TIME_FORMAT),
                pl.col(DROPOFF).str.to_datetime(CSV_TIME_FORMAT),
            )
            seconds = (pl.col(DROPOFF) - pl.col(PICKUP)).dt.total_seconds()
            ok = seconds.is_between(MIN_DURATION_S, MAX_DURATION_S)
            csv_summary = raw.select(
                pl.len().alias("rows_read"),
                ok.sum().alias("valid_trips"),
                seconds.filter(ok).sum().alias("sum_duration_s"),
            ).collect()
            results["csv"] = {key: int(value) for key, value in csv_summary.row(0, named=True).items()}
    return results


# ---------------------------------------------------------------------------------------------------- DuckDB


def run_duckdb(
    parquet: str, csv: str | None, out: Path, train_rows: int, steps: Steps, memory_limit: int | None = None
) -> dict[str, Any]:
    """The workload in DuckDB SQL over the Parquet files (spills to disk beyond its memory limit)."""
    import duckdb
    import pandas as pd

    results: dict[str, Any] = {}
    con = duckdb.connect()
    con.execute(f"SET temp_directory = '{out / 'duckdb_tmp'}'")
    if memory_limit:
        # leave room under the process cap for DuckDB's own allocations outside its buffer manager
        con.execute(f"SET memory_limit = '{int(memory_limit * 0.6) // 2**20}MB'")
    zones_frame = pd.DataFrame(zone_rows())
    con.register("zones", zones_frame)
    files = ", ".join(f"'{f}'" for f in _parquet_files(parquet))
    con.execute(
        f"""CREATE VIEW valid AS
        SELECT *, epoch({DROPOFF}) - epoch({PICKUP}) AS duration_s
        FROM read_parquet([{files}])
        WHERE epoch({DROPOFF}) - epoch({PICKUP}) BETWEEN {MIN_DURATION_S} AND {MAX_DURATION_S}"""
    )
    with steps.step("borough_report"):
        rows_read, valid_trips = con.execute(
            f"SELECT (SELECT count(*) FROM read_parquet([{files}])), (SELECT count(*) FROM valid)"
        ).fetchone() or (0, 0)
        results["rows_read"], results["valid_trips"] = int(rows_read), int(valid_trips)
        report = con.execute(
            f"""SELECT coalesce(z.borough, '{UNKNOWN_BOROUGH}') AS borough, count(*) AS trips,
                       avg(t.duration_s) AS mean
                FROM valid AS t LEFT JOIN zones AS z ON t.PULocationID = z.LocationID
                GROUP BY 1"""
        ).fetchall()
        results["borough_report"] = _report_dict([r[0] for r in report], [r[1] for r in report], [r[2] for r in report])
    with steps.step("features"):
        target = out / "features"
        target.mkdir(parents=True, exist_ok=True)
        # INT96 timestamps arrive as naive UTC: timezone('UTC', ts) makes the instant, then New York wall-clock
        con.execute(
            f"""COPY (
            WITH local AS (
                SELECT *, timezone('{NEW_YORK}', timezone('UTC', {PICKUP})) AS pickup_local FROM valid
            )
            SELECT CAST(hour(pickup_local) AS BIGINT) AS pickup_hour,
                   CAST(day(pickup_local) AS BIGINT) AS pickup_day,
                   CAST(isodow(pickup_local) AS BIGINT) AS pickup_weekday,
                   CAST(isodow(pickup_local) >= 6 AS BIGINT) AS is_weekend,
                   CAST(t.trip_distance AS DOUBLE) AS trip_distance,
                   coalesce(2 * {EARTH_RADIUS_MILES} * asin(sqrt(
                       pow(sin((radians(d.lat) - radians(p.lat)) / 2), 2)
                       + cos(radians(p.lat)) * cos(radians(d.lat)) * pow(sin((radians(d.lon) - radians(p.lon)) / 2), 2)
                   )), 0.0) AS centroid_miles,
                   CAST(coalesce(p.borough_code, 0) AS BIGINT) AS pickup_borough_code,
                   CAST(coalesce(d.borough_code, 0) AS BIGINT) AS dropoff_borough_code,
                   CAST(epoch({PICKUP}) AS BIGINT) AS pickup_epoch_s,
                   t.duration_s / 60.0 AS {LABEL}
            FROM local AS t
            LEFT JOIN zones AS p ON t.PULocationID = p.LocationID
            LEFT JOIN zones AS d ON t.DOLocationID = d.LocationID
            ) TO '{target / "part-0.parquet"}' (FORMAT parquet)"""
        )
        sums = ", ".join(f"sum({c})" for c in (*INT_COLUMNS, *FLOAT_COLUMNS))
        row = con.execute(f"SELECT count(*), {sums} FROM read_parquet('{target / 'part-0.parquet'}')").fetchone()
        assert row is not None
        results["features"] = {
            "rows": int(row[0]),
            **{c: int(v) for c, v in zip(INT_COLUMNS, row[1 : 1 + len(INT_COLUMNS)], strict=True)},
            **{c: float(v) for c, v in zip(FLOAT_COLUMNS, row[1 + len(INT_COLUMNS) :], strict=True)},
        }
    if csv:
        with steps.step("load_csv"):
            csv_files = ", ".join(f"'{f}'" for f in _csv_files(csv))
            fmt = CSV_TIME_FORMAT
            row = con.execute(
                f"""WITH raw AS (
                    SELECT epoch(strptime({DROPOFF}, '{fmt}')) - epoch(strptime({PICKUP}, '{fmt}')) AS seconds
                    FROM read_csv([{csv_files}], header = true, all_varchar = true)
                )
                SELECT count(*), count(*) FILTER (WHERE seconds BETWEEN {MIN_DURATION_S} AND {MAX_DURATION_S}),
                       sum(seconds) FILTER (WHERE seconds BETWEEN {MIN_DURATION_S} AND {MAX_DURATION_S})
                FROM raw"""
            ).fetchone()
            assert row is not None
            results["csv"] = {"rows_read": int(row[0]), "valid_trips": int(row[1]), "sum_duration_s": int(row[2])}
    con.close()
    return results


# ---------------------------------------------------------------------------------------------------- Spark


def _spark_session(naive: bool, driver_memory: str, workspace: Path, lecture_partitions: bool = True) -> Any:
    """The project's session (settings + get_spark), or a lecture-style one with the defaults of a course."""
    if naive:
        from pyspark.sql import SparkSession

        from taxi_duration.spark import SESSION_TIME_ZONE, use_session_time_zone_in_python

        use_session_time_zone_in_python()
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the UDF's workers need this environment
        # lecture-era defaults: 200 shuffle partitions, no adaptive execution; same heap and zone as the tuned run
        return (
            SparkSession.builder.master("local[*]")
            .appName("bench-naive")
            .config("spark.driver.memory", driver_memory)
            .config("spark.sql.session.timeZone", SESSION_TIME_ZONE)
            .config("spark.sql.adaptive.enabled", str(not lecture_partitions).lower())
            .config("spark.sql.shuffle.partitions", "200" if lecture_partitions else "8")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.warehouse.dir", str(workspace / "warehouse"))
            .getOrCreate()
        )
    from taxi_duration.settings import Settings
    from taxi_duration.spark import configure_driver_process, get_spark

    settings = Settings(workspace=workspace, driver_memory=driver_memory, spark_conf={"spark.ui.enabled": "false"})
    configure_driver_process(settings)  # a bench child process is its own entry point
    return get_spark(settings, app_name="bench")


def _spark_zone_frames(spark: Any) -> tuple[Any, Any]:
    from pyspark.sql import functions as F

    zones = spark.createDataFrame(
        zone_rows(), "LocationID int, borough string, borough_code int, lat double, lon double"
    )
    pickup = zones.select(
        F.col("LocationID").alias("PULocationID"),
        F.col("lat").alias("lat1"),
        F.col("lon").alias("lon1"),
        F.col("borough_code").alias("pickup_borough_code"),
    )
    dropoff = zones.select(
        F.col("LocationID").alias("DOLocationID"),
        F.col("lat").alias("lat2"),
        F.col("lon").alias("lon2"),
        F.col("borough_code").alias("dropoff_borough_code"),
    )
    return zones, (pickup, dropoff)


def _spark_summaries(features: Any) -> dict[str, Any]:
    from pyspark.sql import functions as F

    row = features.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.sum(c).alias(c) for c in INT_COLUMNS],
        *[F.sum(c).alias(c) for c in FLOAT_COLUMNS],
    ).first()
    return {
        "rows": int(row["rows"]),
        **{c: int(row[c]) for c in INT_COLUMNS},
        **{c: float(row[c]) for c in FLOAT_COLUMNS},
    }


def _spark_report(valid: Any, zones: Any) -> dict[str, Any]:
    from pyspark.sql import functions as F

    rows = (
        valid.join(
            F.broadcast(zones.select("LocationID", "borough")), valid["PULocationID"] == zones["LocationID"], "left"
        )
        .groupBy(F.coalesce(F.col("borough"), F.lit(UNKNOWN_BOROUGH)).alias("borough"))
        .agg(F.count(F.lit(1)).alias("trips"), F.avg("duration_s").alias("mean"))
        .collect()
    )
    return _report_dict([r["borough"] for r in rows], [r["trips"] for r in rows], [r["mean"] for r in rows])


def _spark_feature_columns(local_pickup: Any, pickup_epoch: Any, centroid_miles: Any) -> list[Any]:
    from pyspark.sql import functions as F

    weekday = F.weekday(local_pickup) + 1  # weekday(): 0 = Monday
    return [
        F.hour(local_pickup).cast("long").alias("pickup_hour"),
        F.dayofmonth(local_pickup).cast("long").alias("pickup_day"),
        weekday.cast("long").alias("pickup_weekday"),
        (weekday >= 6).cast("long").alias("is_weekend"),
        F.col("trip_distance").cast("double").alias("trip_distance"),
        F.coalesce(centroid_miles, F.lit(0.0)).alias("centroid_miles"),
        F.coalesce(F.col("pickup_borough_code"), F.lit(0)).cast("long").alias("pickup_borough_code"),
        F.coalesce(F.col("dropoff_borough_code"), F.lit(0)).cast("long").alias("dropoff_borough_code"),
        pickup_epoch.cast("long").alias("pickup_epoch_s"),
        (F.col("duration_s") / 60.0).alias(LABEL),
    ]


def _haversine_column() -> Any:
    from pyspark.sql import functions as F

    lat1, lat2 = F.radians("lat1"), F.radians("lat2")
    a = F.pow(F.sin((lat2 - lat1) / 2), 2) + F.cos(lat1) * F.cos(lat2) * F.pow(
        F.sin((F.radians("lon2") - F.radians("lon1")) / 2), 2
    )
    return 2 * EARTH_RADIUS_MILES * F.asin(F.sqrt(a))


def run_spark(
    parquet: str,
    csv: str | None,
    out: Path,
    train_rows: int,
    steps: Steps,
    driver_memory: str = "4g",
    models: Models | None = None,
) -> dict[str, Any]:
    """The workload the project's way: schema-typed Parquet reads with column pruning, built-in functions only,
    broadcast joins of the zone table, AQE with few shuffle partitions, one action per result."""
    from pyspark.sql import functions as F

    results: dict[str, Any] = {}
    with steps.step("session"):
        spark = _spark_session(naive=False, driver_memory=driver_memory, workspace=out / "spark")
    zones, (pickup_zones, dropoff_zones) = _spark_zone_frames(spark)
    trips = spark.read.parquet(*_parquet_files(parquet)).select(*COLUMNS)
    duration = F.unix_seconds(F.col(DROPOFF)) - F.unix_seconds(F.col(PICKUP))
    valid = trips.withColumn("duration_s", duration).where(F.col("duration_s").between(MIN_DURATION_S, MAX_DURATION_S))
    with steps.step("borough_report"):
        counts = trips.agg(
            F.count(F.lit(1)).alias("rows_read"),
            F.count(F.when(duration.between(MIN_DURATION_S, MAX_DURATION_S), 1)).alias("valid_trips"),
        ).first()
        results["rows_read"], results["valid_trips"] = int(counts["rows_read"]), int(counts["valid_trips"])
        results["borough_report"] = _spark_report(valid, zones)
    with steps.step("features"):
        # Spark reads INT96 as instants and shows them in the session zone (New York): no conversion needed
        features = (
            valid.join(F.broadcast(pickup_zones), on="PULocationID", how="left")
            .join(F.broadcast(dropoff_zones), on="DOLocationID", how="left")
            .select(*_spark_feature_columns(F.col(PICKUP), F.unix_seconds(F.col(PICKUP)), _haversine_column()))
        )
        target = str(out / "features")
        features.write.mode("overwrite").parquet(target)
        results["features"] = _spark_summaries(spark.read.parquet(target))
    if train_rows > 0:
        with steps.step("train"):
            results["training"] = _train_mllib(spark.read.parquet(target), train_rows, models or Models())
    if csv:
        with steps.step("load_csv"):
            from taxi_duration.generate.synthetic import YELLOW_SCHEMA

            # CSV columns are positional: the schema on read is the whole TLC yellow schema
            raw = (
                spark.read.schema(YELLOW_SCHEMA)
                .option("header", True)
                .option("timestampFormat", "yyyy-MM-dd HH:mm:ss")
                .csv(_csv_files(csv))
            )
            seconds = F.unix_seconds(F.col(DROPOFF)) - F.unix_seconds(F.col(PICKUP))
            ok = seconds.between(MIN_DURATION_S, MAX_DURATION_S)
            row = raw.agg(
                F.count(F.lit(1)).alias("rows_read"),
                F.count(F.when(ok, 1)).alias("valid_trips"),
                F.sum(F.when(ok, seconds)).alias("sum_duration_s"),
            ).first()
            results["csv"] = {key: int(row[key]) for key in ("rows_read", "valid_trips", "sum_duration_s")}
    spark.stop()
    return results


def _train_mllib(features: Any, train_rows: int, models: Models) -> dict[str, Any]:
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import GBTRegressor, RandomForestRegressor
    from pyspark.sql import functions as F

    is_train = F.col("pickup_day") <= TRAIN_LAST_DAY
    sizes = features.agg(
        F.count(F.when(is_train, 1)).alias("train"), F.count(F.when(~is_train, 1)).alias("valid")
    ).first()
    k_train = cap_threshold(train_rows, int(sizes["train"]))
    k_valid = cap_threshold(train_rows // VALIDATION_SHARE_OF_CAP, int(sizes["valid"]))
    assembler = VectorAssembler(inputCols=list(FEATURES), outputCol="features_vector")
    epoch_mod = F.col("pickup_epoch_s") % CAP_MODULUS
    # GBT and RF scan the training set once per tree level: cache the assembled vectors, not the raw table
    train = assembler.transform(features.where(is_train & (epoch_mod < k_train))).select("features_vector", LABEL)
    valid = assembler.transform(features.where(~is_train & (epoch_mod < k_valid))).select("features_vector", LABEL)
    train, valid = train.cache(), valid.cache()
    result: dict[str, Any] = {"train_rows": train.count(), "valid_rows": valid.count()}
    evaluator = RegressionEvaluator(labelCol=LABEL, predictionCol="prediction", metricName="rmse")
    start = time.perf_counter()
    boost = GBTRegressor(
        featuresCol="features_vector",
        labelCol=LABEL,
        maxIter=models.boost_iterations,
        maxDepth=BOOST_DEPTH,
        stepSize=LEARNING_RATE,
        seed=SEED,
    ).fit(train)
    result["boost_rmse"] = float(evaluator.evaluate(boost.transform(valid)))
    result["boost_seconds"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    forest = RandomForestRegressor(
        featuresCol="features_vector",
        labelCol=LABEL,
        numTrees=models.forest_trees,
        maxDepth=FOREST_DEPTH,
        featureSubsetStrategy=str(FOREST_FEATURES),
        seed=SEED,
    ).fit(train)
    result["forest_rmse"] = float(evaluator.evaluate(forest.transform(valid)))
    result["forest_seconds"] = round(time.perf_counter() - start, 3)
    train.unpersist()
    valid.unpersist()
    return result


def _haversine_python(lat1: float | None, lon1: float | None, lat2: float | None, lon2: float | None) -> float:
    if lat1 is None or lon1 is None or lat2 is None or lon2 is None:
        return 0.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin((math.radians(lon2) - math.radians(lon1)) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_MILES * math.asin(math.sqrt(a))


NAIVE_FIXES = ("schema", "typed_times", "builtin", "no_counts", "partitions")


def run_spark_naive(
    parquet: str,
    csv: str | None,
    out: Path,
    train_rows: int,
    steps: Steps,
    driver_memory: str = "4g",
    fixes: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The same report and features written the way a course notebook does: CSV with inferSchema, timestamps
    as strings subtracted with unix_timestamp, a Python UDF for the distance, a count() after each step,
    200 shuffle partitions without AQE. Needs the CSV copy.

    `fixes` (for the ablation in benchmarks/spark_ablation.py) undoes one habit each: `schema` (schema on read),
    `typed_times` (timestamps as timestamps), `builtin` (built-in haversine), `no_counts` (no intermediate
    actions), `partitions` (8 shuffle partitions with AQE)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    if not csv:
        raise FileNotFoundError("spark-naive reads the CSV copy: generate it (formats csv)")
    results: dict[str, Any] = {}
    with steps.step("session"):
        spark = _spark_session(
            naive=True,
            driver_memory=driver_memory,
            workspace=out / "spark",
            lecture_partitions="partitions" not in fixes,
        )
    zones, (pickup_zones, dropoff_zones) = _spark_zone_frames(spark)
    count_every_step = "no_counts" not in fixes
    with steps.step("borough_report"):
        if "schema" in fixes:
            from taxi_duration.generate.synthetic import YELLOW_SCHEMA

            reader = spark.read.schema(YELLOW_SCHEMA).option("timestampFormat", "yyyy-MM-dd HH:mm:ss")
        else:
            reader = spark.read.option("inferSchema", True)
        raw = reader.option("header", True).csv(_csv_files(csv))
        if count_every_step:
            results["rows_read"] = raw.count()
        as_text = "yyyy-MM-dd HH:mm:ss"
        df = raw.withColumn("pickup_str", F.col(PICKUP).cast("string")).withColumn(
            "dropoff_str", F.col(DROPOFF).cast("string")
        )
        if "typed_times" in fixes:
            pickup_time, pickup_epoch = F.col(PICKUP), F.unix_seconds(F.col(PICKUP))
            seconds = F.unix_seconds(F.col(DROPOFF)) - pickup_epoch
        else:
            pickup_time, pickup_epoch = F.to_timestamp("pickup_str", as_text), F.unix_timestamp("pickup_str", as_text)
            seconds = F.unix_timestamp("dropoff_str", as_text) - pickup_epoch
        df = df.withColumn("duration_s", seconds)
        df = df.filter((F.col("duration_s") >= MIN_DURATION_S) & (F.col("duration_s") <= MAX_DURATION_S))
        if count_every_step:
            results["valid_trips"] = df.count()
        else:
            counts = raw.agg(
                F.count(F.lit(1)).alias("rows_read"),
                F.count(F.when(seconds.between(MIN_DURATION_S, MAX_DURATION_S), 1)).alias("valid_trips"),
            ).first()
            results["rows_read"], results["valid_trips"] = int(counts["rows_read"]), int(counts["valid_trips"])
        joined = df.join(zones.select("LocationID", "borough"), df["PULocationID"] == zones["LocationID"], "left")
        if count_every_step:
            joined.count()
        rows = (
            joined.withColumn("borough", F.coalesce(F.col("borough"), F.lit(UNKNOWN_BOROUGH)))
            .groupBy("borough")
            .agg(F.count("*").alias("trips"), F.avg("duration_s").alias("mean"))
            .collect()
        )
        results["borough_report"] = _report_dict(
            [r["borough"] for r in rows], [r["trips"] for r in rows], [r["mean"] for r in rows]
        )
    with steps.step("features"):
        haversine = F.udf(_haversine_python, DoubleType())
        with_zones = df.join(pickup_zones, on="PULocationID", how="left").join(
            dropoff_zones, on="DOLocationID", how="left"
        )
        if count_every_step:
            with_zones.count()
        distance = _haversine_column() if "builtin" in fixes else haversine("lat1", "lon1", "lat2", "lon2")
        features = with_zones.select(*_spark_feature_columns(pickup_time, pickup_epoch, distance))
        if count_every_step:
            features.count()
        target = str(out / "features")
        features.write.mode("overwrite").parquet(target)
        results["features"] = _spark_summaries(spark.read.parquet(target))
    spark.stop()
    return results


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "pandas": run_pandas,
    "polars": run_polars,
    "duckdb": run_duckdb,
    "spark": run_spark,
    "spark-naive": run_spark_naive,
}


def _is_memory_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    markers = (
        "memoryerror",
        "out of memory",
        "outofmemory",
        "cannot allocate memory",
        "bad_alloc",
        "memory allocation",
    )
    return isinstance(exc, MemoryError) or any(marker in text for marker in markers)


def main(argv: list[str] | None = None) -> int:
    """Run one engine over one dataset and print its results as one JSON line."""
    parser = argparse.ArgumentParser(description="Run the comparison workload on one engine.")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--parquet", required=True)
    parser.add_argument("--csv")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train-rows", type=int, default=0)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--memory-limit", type=int, default=0, help="bytes; DuckDB's memory_limit is set below it")
    parser.add_argument("--boost-iterations", type=int, default=BOOST_ITERATIONS)
    parser.add_argument("--forest-trees", type=int, default=FOREST_TREES)
    parser.add_argument(
        "--naive-fixes", default="", help=f"spark-naive only, comma-separated: {', '.join(NAIVE_FIXES)}"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    train_rows = args.train_rows if args.engine in TRAINING_ENGINES else 0
    kwargs: dict[str, Any] = {}
    if args.engine.startswith("spark"):
        kwargs["driver_memory"] = args.driver_memory
    if args.engine in TRAINING_ENGINES:
        kwargs["models"] = Models(args.boost_iterations, args.forest_trees)
    if args.engine == "spark-naive" and args.naive_fixes:
        kwargs["fixes"] = frozenset(f for f in args.naive_fixes.split(",") if f)
        unknown = kwargs["fixes"] - set(NAIVE_FIXES)
        if unknown:
            parser.error(f"--naive-fixes: unknown {sorted(unknown)}; known: {', '.join(NAIVE_FIXES)}")
    if args.engine == "duckdb":
        kwargs["memory_limit"] = args.memory_limit or None
    try:
        results = RUNNERS[args.engine](args.parquet, args.csv, args.out, train_rows, steps, **kwargs)
    except BaseException as exc:
        if _is_memory_error(exc):
            print(json.dumps({"status": "oom", "error": f"{type(exc).__name__}: {exc}"[:500], "steps": steps.seconds}))
            return EXIT_OOM
        raise
    print(json.dumps({"status": "ok", "results": results, "steps": steps.seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
