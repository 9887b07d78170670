"""The monitor job: resolve the champion (`champion.py`), score the current and reference windows (reusing stored
predictions), compute drift, realised error and quality drift, and decide (`run_monitor`); `publish.py` then writes
the tables, the MLflow run and the report.

Everything is computed before anything is written: a bad window, no champion or too small a reference stop the
job with one line and leave the workspace as it was."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from functools import reduce
from typing import Any

import pandas as pd
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.columns import PREDICTION
from taxi_duration.errors import ConfigError, NoDataError
from taxi_duration.features.definitions import FEATURE_COLUMNS, FEATURE_INPUT_COLUMNS
from taxi_duration.features.output import minutes_from_log_seconds
from taxi_duration.monitor.champion import monitored_features, reference_window, resolve_champion
from taxi_duration.monitor.drift import (
    CURRENT,
    PERIOD,
    REFERENCE,
    WINDOW_START,
    drift_table,
    reference_profile,
    with_bin_counts,
)
from taxi_duration.monitor.publish import BOROUGH
from taxi_duration.monitor.quality import in_window, quarantine_shares, source_day_counts, source_periods
from taxi_duration.monitor.realized import ACTUAL, PREDICTED, error_profile
from taxi_duration.monitor.result import MonitorRequest, MonitorResult
from taxi_duration.params import MonitorParams
from taxi_duration.registry.spark_model import load_spark_model
from taxi_duration.sampling import chosen_by_trip_id, fraction_for
from taxi_duration.zones import BOROUGH_CODES

# `cycle` and schedulers branch on this: 0 no alert, 2 bad input (as every command), 4 alert with --fail-on-alert
ALERT_EXIT_CODE = 4
WINDOWS = {"day": "day", "week": "week", "month": "month"}
REUSED = "prediction_reused"
STORED = "_stored_prediction"
SAMPLE_SALT = 71  # the monitor's samples: not the trips `train` picks with its own salts


def scored_trips(
    trips: DataFrame, model: PipelineModel, stored: DataFrame | None, carry: Sequence[str] = ()
) -> DataFrame:
    """Trips -> the model's features, actual and predicted minutes, `prediction_reused`, in one pass: the model
    computes its own features (its feature SQL and travel-time table) for every trip, and a trip with a stored
    prediction of this model version keeps that prediction (the one users were given). `carry`: columns kept
    through, and matched with the stored predictions' as trip_id is."""
    base = trips.select("trip_id", *carry, *FEATURE_INPUT_COLUMNS, (F.col("duration_s") / F.lit(60.0)).alias(ACTUAL))
    if stored is None:
        base = base.withColumn(STORED, F.lit(None).cast("double"))
    else:
        stored_rows = stored.select("trip_id", *carry, F.col(PREDICTED).alias(STORED))
        base = base.join(stored_rows, on=["trip_id", *carry], how="left")
    computed = minutes_from_log_seconds(F.col(PREDICTION))
    return model.transform(base).select(
        *carry,
        "pickup_datetime",
        "pickup_location_id",
        *FEATURE_COLUMNS,
        ACTUAL,
        F.coalesce(F.col(STORED), computed).alias(PREDICTED),
        F.col(STORED).isNotNull().alias(REUSED),
    )


def stream_as_trips(stream_predictions: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Stream predictions (zones, distance, pickup time, predicted and actual minutes, model version) -> trips in
    the shape `scored_trips` reads, and the stored predictions (with their model version)."""
    no_coordinates = [
        F.lit(None).cast("double").alias(name)
        for name in ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")
    ]
    trips = stream_predictions.select(
        "trip_id",
        "pickup_datetime",
        "pickup_location_id",
        "dropoff_location_id",
        *no_coordinates,
        "trip_distance",
        (F.col("actual_duration_minutes") * F.lit(60.0)).alias("duration_s"),
    )
    stored = stream_predictions.select(
        "trip_id", "model_name", "model_version", F.col("predicted_duration_minutes").alias(PREDICTED)
    )
    return trips, stored


def _borough_name() -> F.Column:
    names = F.create_map(*[F.lit(x) for code, name in ((c, n) for n, c in BOROUGH_CODES.items()) for x in (code, name)])
    return F.coalesce(F.element_at(names, F.col("pickup_borough")), F.lit("Unknown"))


def _iso(window: tuple[datetime, datetime]) -> dict[str, str]:
    return {"from": window[0].isoformat(), "to": window[1].isoformat()}


def _window_counts(trips: DataFrame, current: tuple[datetime, datetime], reference: tuple[datetime, datetime]):
    row = trips.agg(
        F.count(F.when(in_window("pickup_datetime", current), F.lit(1))).alias("current"),
        F.count(F.when(in_window("pickup_datetime", reference), F.lit(1))).alias("reference"),
        F.min("pickup_datetime").alias("first"),
        F.max("pickup_datetime").alias("last"),
    ).first()
    assert row is not None
    return int(row["current"]), int(row["reference"]), row["first"], row["last"]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def run_monitor(
    trips: DataFrame,
    request: MonitorRequest,
    params: MonitorParams,
    *,
    model_name: str,
    alias: str,
    trips_label: str,
    predictions: DataFrame | None = None,
    quarantine: DataFrame | None = None,
    stream_predictions: DataFrame | None = None,
) -> tuple[MonitorResult, dict[str, pd.DataFrame]]:
    """Compute everything (no writes). Returns the result and the tables `write_outputs` appends."""
    import time

    timings: dict[str, float] = {}
    started = time.perf_counter()
    if request.window not in WINDOWS:
        raise ConfigError(f"--window: expected day, week or month, found '{request.window}'")
    start, end = request.current
    if not start < end:
        raise ConfigError(f"--from {start.isoformat()} must be before --to {end.isoformat()}")
    champion = resolve_champion(model_name, alias)
    reference = reference_window(champion, request.reference_from, request.reference_to)
    if not reference[0] < reference[1]:
        raise ConfigError(f"--reference-from {reference[0]} must be before --reference-to {reference[1]}")

    current_trips: DataFrame
    stored_current: DataFrame | None
    if request.source == "stream":
        if stream_predictions is None:
            raise NoDataError("no stream predictions yet; run `taxi-duration stream` first")
        current_trips, stored_current = stream_as_trips(stream_predictions)
        label_current = "stream predictions"
    else:
        current_trips, stored_current, label_current = trips, predictions, trips_label
    if request.source == "stream":
        rows_current, _, first, last = _window_counts(current_trips, request.current, request.current)
        _, rows_reference, _, _ = _window_counts(trips, reference, reference)
    else:  # one scan for both counts
        rows_current, rows_reference, first, last = _window_counts(trips, request.current, reference)
    if rows_current < params.min_current_rows:
        held = f"it holds pickups from {first} to {last}" if first is not None else "it holds no trips"
        raise NoDataError(
            f"current window [{start.isoformat()}, {end.isoformat()}): {rows_current} trips in {label_current}, "
            f"fewer than monitor.min_current_rows={params.min_current_rows}; {held}"
        )
    if rows_reference < params.min_reference_rows:
        raise NoDataError(
            f"reference window [{reference[0].isoformat()}, {reference[1].isoformat()}): {rows_reference} trips in "
            f"{trips_label}, fewer than monitor.min_reference_rows={params.min_reference_rows}; pass "
            "--reference-from/--reference-to or ingest the champion's training months"
        )
    timings["checks"] = round(time.perf_counter() - started, 2)

    model = load_spark_model(f"models:/{model_name}/{champion.version}", trips.sparkSession)

    # beyond monitor.max_trips in a period, the statistics read a sample chosen by trip id (the same trips in the
    # trips and in the stored predictions, so the join keeps them all); the counts above stay exact
    sampled = {
        CURRENT: fraction_for(rows_current, params.max_trips),
        REFERENCE: fraction_for(rows_reference, params.max_trips),
    }

    def sample(frame: DataFrame, period: str) -> DataFrame:
        return frame if sampled[period] >= 1.0 else frame.filter(chosen_by_trip_id(sampled[period], SAMPLE_SALT))

    def stored_rows(frame: DataFrame | None, period: str) -> DataFrame | None:
        """This model version's stored predictions, sampled as the period's trips are."""
        if frame is None:
            return None
        mine = (F.col("model_name") == F.lit(model_name)) & (F.col("model_version") == F.lit(champion.version))
        return sample(frame.filter(mine), period)

    def tagged(frame: DataFrame, name: str, *columns: str) -> DataFrame:
        return frame.select(*columns, F.lit(name).alias(PERIOD))

    # both periods in one frame, so the model's feature SQL (with its large literals) is planned once and the
    # stored predictions joined once
    inputs = ["trip_id", *FEATURE_INPUT_COLUMNS, "duration_s"]
    windowed = sample(current_trips.filter(in_window("pickup_datetime", request.current)), CURRENT)
    reference_trips = sample(trips.filter(in_window("pickup_datetime", reference)), REFERENCE)
    stored_parts = [
        tagged(frame, name, "trip_id", PREDICTED)
        for frame, name in (
            (stored_rows(stored_current, CURRENT), CURRENT),
            (stored_rows(predictions, REFERENCE), REFERENCE),
        )
        if frame is not None
    ]
    scored = scored_trips(
        tagged(windowed, CURRENT, *inputs).unionByName(tagged(reference_trips, REFERENCE, *inputs)),
        model,
        reduce(DataFrame.unionByName, stored_parts) if stored_parts else None,
        carry=[PERIOD],
    )
    is_current = F.col(PERIOD) == F.lit(CURRENT)
    monitored = scored.select(
        "*",
        F.when(is_current, F.date_trunc(WINDOWS[request.window], "pickup_datetime")).alias(WINDOW_START),
        _borough_name().alias(BOROUGH),
    )
    features = monitored_features(champion)
    # Scored once: the model (and the feature SQL) would otherwise run on every trip in each of the three passes
    # below. Only the columns the passes read are kept, on disk (memory stays flat in the number of trips); the
    # blocks are dropped when the passes are done, or fail.
    needed = dict.fromkeys([PERIOD, WINDOW_START, BOROUGH, REUSED, *(f.name for f in features)])
    monitored = monitored.select(*needed).persist(StorageLevel.DISK_ONLY)
    try:
        mark = time.perf_counter()
        monitored.count()
        timings["score"] = round(time.perf_counter() - mark, 2)
        mark = time.perf_counter()
        profile = reference_profile(
            monitored.filter(F.col(PERIOD) == REFERENCE), features, params.bins, params.quantile_relative_error
        )
        timings["reference_quantiles"] = round(time.perf_counter() - mark, 2)
        mark = time.perf_counter()
        counts = monitored.transform(with_bin_counts(features, profile, [PERIOD, WINDOW_START])).toPandas()
        timings["bin_counts"] = round(time.perf_counter() - mark, 2)
        mark = time.perf_counter()
        errors = monitored.transform(
            error_profile(
                [PERIOD, WINDOW_START, BOROUGH],
                extra=[F.sum(F.col(REUSED).cast("long")).alias("predictions_reused")],
                always=1,  # the period is always grouped
            )
        ).toPandas()
        timings["realized_error"] = round(time.perf_counter() - mark, 2)
    finally:
        monitored.unpersist()
    quality = pd.DataFrame(columns=[PERIOD, "reason", "rows", "input_rows", "share"])
    if quarantine is not None and request.source == "trips":
        mark = time.perf_counter()
        day_counts = source_day_counts(trips).cache()  # read twice; a row per source and day
        try:
            periods = source_periods(day_counts, request.current, reference)
            quality = quarantine_shares(day_counts, quarantine, periods).toPandas()
        finally:
            day_counts.unpersist()
        timings["quality"] = round(time.perf_counter() - mark, 2)

    overall_counts = pd.DataFrame(counts.groupby([PERIOD, "feature", "bin"], as_index=False)["rows"].sum())
    overall = drift_table(overall_counts, None, params.psi_threshold, params.js_threshold)
    per_window = drift_table(counts, WINDOW_START, params.psi_threshold, params.js_threshold)

    def error_row(period: str, grouping: int) -> pd.Series | None:
        rows = errors[(errors[PERIOD] == period) & (errors["grouping"] == grouping)]
        return None if rows.empty else rows.iloc[0]

    current_all = error_row(CURRENT, 3)
    reference_all = error_row(REFERENCE, 3)
    realized_rmsle = _finite(current_all["rmsle"]) if current_all is not None else None
    validation = champion.validation_rmsle
    ratio = realized_rmsle / validation if realized_rmsle is not None and validation else None
    predictions_reused = int(current_all["predictions_reused"] or 0) if current_all is not None else 0
    if reference_all is not None:
        predictions_reused += int(reference_all["predictions_reused"] or 0)
    monitored_rows = sum(int(row["rows"]) for row in (current_all, reference_all) if row is not None)
    scored_now = monitored_rows - predictions_reused

    by_feature = {row["feature"]: row for row in overall.to_dict(orient="records")}
    prediction = by_feature.get(PREDICTED)
    input_features = [f.name for f in features if f.name not in (ACTUAL, PREDICTED)]
    drifted = [name for name in input_features if by_feature.get(name, {}).get("drifted")]
    scored_inputs = [name for name in input_features if name not in profile.zero_variance]
    reasons = []
    if ratio is not None and ratio > params.realized_ratio:
        reasons.append(
            f"realised RMSLE {realized_rmsle:.4f} is {ratio:.2f}x the champion's validation RMSLE {validation:.4f} "
            f"(limit {params.realized_ratio:.2f}x)"
        )
    elif validation:
        # a long window can dilute a recent break (2020-01..06 as one window: 1.22x); each window of the time
        # series with enough trips to be more than noise is judged too
        windows = errors[(errors[PERIOD] == CURRENT) & (errors["grouping"] == 1)]
        windows = windows[windows["rows"] >= params.min_window_rows].sort_values(WINDOW_START)
        stale = [
            (pd.Timestamp(row[WINDOW_START]).date().isoformat(), float(row["rmsle"]) / validation)
            for row in windows.to_dict(orient="records")
            if float(row["rmsle"]) / validation > params.realized_ratio
        ]
        if stale:
            listed = ", ".join(f"{start} ({value:.2f}x)" for start, value in stale)
            reasons.append(
                f"realised RMSLE above {params.realized_ratio:.2f}x the champion's validation RMSLE "
                f"{validation:.4f} in {len(stale)} of {len(windows)} {request.window}(s): {listed}"
            )
    if prediction is not None and prediction["drifted"]:
        reasons.append(
            f"prediction drift: PSI {prediction['psi']:.3f} (limit {params.psi_threshold}), "
            f"JS distance {prediction['js_distance']:.3f} (limit {params.js_threshold})"
        )
    if scored_inputs and len(drifted) / len(scored_inputs) >= params.drifted_feature_share:
        reasons.append(
            f"{len(drifted)} of {len(scored_inputs)} features drifted ({', '.join(drifted)}; "
            f"limit {params.drifted_feature_share:.0%})"
        )
    feature_rows = [
        {
            "feature": f.name,
            "kind": f.kind,
            "psi": _finite(by_feature[f.name]["psi"]) if f.name in by_feature else None,
            "js_distance": _finite(by_feature[f.name]["js_distance"]) if f.name in by_feature else None,
            "drifted": bool(by_feature[f.name]["drifted"]) if f.name in by_feature else False,
            "zero_variance": f.name in profile.zero_variance,
        }
        for f in features
    ]
    timings["total"] = round(time.perf_counter() - started, 2)
    result = MonitorResult(
        alert=bool(reasons),
        reasons=reasons,
        rows_current=rows_current,
        rows_reference=rows_reference,
        drifted_features=drifted,
        prediction_psi=_finite(prediction["psi"]) if prediction else None,
        prediction_js=_finite(prediction["js_distance"]) if prediction else None,
        realized={
            "rmsle": realized_rmsle,
            "reference_rmsle": validation,
            "ratio": ratio,
            "mae_minutes": _finite(current_all["mae_minutes"]) if current_all is not None else None,
            "bias_minutes": _finite(current_all["bias_minutes"]) if current_all is not None else None,
            "reference_period_rmsle": _finite(reference_all["rmsle"]) if reference_all is not None else None,
        },
        model_name=model_name,
        model_version=champion.version,
        current=_iso(request.current),
        reference=_iso(reference),
        window=request.window,
        source=request.source,
        zero_variance_features=sorted(profile.zero_variance),
        features=feature_rows,
        quality=[{str(k): v for k, v in row.items()} for row in quality.to_dict(orient="records")],
        predictions_reused=predictions_reused,
        predictions_scored=scored_now,
        sampled={period: round(value, 6) for period, value in sampled.items()},
        seconds=timings,
    )
    tables = {
        "counts": counts,
        "drift_overall": overall,
        "drift_windows": per_window,
        "errors": errors,
        "quality": quality,
        "edges": pd.DataFrame(
            [{"feature": k, "edges": list(v)} for k, v in profile.edges.items()], columns=["feature", "edges"]
        ),
    }
    return result, tables
