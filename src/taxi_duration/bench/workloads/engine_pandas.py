"""The comparison workload in pandas (+ NumPy, scikit-learn): everything in memory."""

from __future__ import annotations

import os
import time
from typing import Any

from taxi_duration.bench.workloads.common import (
    BOOST_DEPTH,
    CAP_MODULUS,
    COLUMNS,
    CSV_TIME_FORMAT,
    DROPOFF,
    EARTH_RADIUS_MILES,
    FEATURES,
    FLOAT_COLUMNS,
    FOREST_DEPTH,
    FOREST_FEATURES,
    INT_COLUMNS,
    LABEL,
    LEARNING_RATE,
    MAX_DURATION_S,
    MIN_DURATION_S,
    NEW_YORK,
    PICKUP,
    SEED,
    TRAIN_LAST_DAY,
    UNKNOWN_BOROUGH,
    VALIDATION_SHARE_OF_CAP,
    Models,
    Steps,
    Workload,
    cap_threshold,
    csv_files,
    report_dict,
    rmse,
    zone_rows,
)


def run_pandas(work: Workload, steps: Steps, models: Models | None = None) -> dict[str, Any]:
    """The workload in pandas (+ NumPy, scikit-learn): everything in memory."""
    import numpy as np
    import pandas as pd

    results: dict[str, Any] = {}
    zones = pd.DataFrame(zone_rows())
    with steps.step("load"):
        trips = pd.read_parquet(work.parquet, columns=list(COLUMNS))
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
        results["borough_report"] = report_dict(list(report.index), list(report["count"]), list(report["mean"]))
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
        features.to_parquet(work.out / "features", index=False, partition_cols=None)
        results["features"] = {
            "rows": len(features),
            **{c: int(features[c].sum()) for c in INT_COLUMNS},
            **{c: float(features[c].sum()) for c in FLOAT_COLUMNS},
        }
    if work.train_rows > 0:
        with steps.step("train"):
            results["training"] = _train_sklearn(features, work.train_rows, models or Models())
    del features
    if work.csv:
        with steps.step("load_csv"):
            frames = [
                pd.read_csv(path, usecols=list(COLUMNS), parse_dates=[PICKUP, DROPOFF], date_format=CSV_TIME_FORMAT)
                for path in csv_files(work.csv)
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
    result["boost_rmse"] = rmse(y_valid, boost.predict(x_valid))
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
    result["forest_rmse"] = rmse(y_valid, forest.predict(x_valid))
    result["forest_seconds"] = round(time.perf_counter() - start, 3)
    return result
