"""Metrics in minutes (RMSE, MAE, RMSLE, R²) and the zone-pair median baseline they are compared with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from taxi_duration.columns import PREDICTION
from taxi_duration.features.definitions import zone_centroid_sql
from taxi_duration.features.output import minutes_from_log_seconds
from taxi_duration.regimes import Regime

PREDICTED_MINUTES = "predicted_minutes"
ACTUAL_MINUTES = "actual_minutes"
BASELINE_MINUTES = "baseline_minutes"
MEDIAN_ACCURACY = 1_000
# rmsle is on minutes (what promotion compares); rmsle_seconds is Kaggle's NYC Taxi Trip Duration definition
METRIC_NAMES = ("rmse_minutes", "mae_minutes", "rmsle", "rmsle_seconds", "r2", "rows")


def predict_minutes(model: PipelineModel, df: DataFrame) -> DataFrame:
    """Model predictions with predicted and actual minutes."""
    return (
        model.transform(df)
        .withColumn(PREDICTED_MINUTES, minutes_from_log_seconds(F.col(PREDICTION)))
        .withColumn(ACTUAL_MINUTES, F.col("duration_s") / F.lit(60.0))
    )


def _metric_columns(predicted: str, actual: str, prefix: str) -> list[Column]:
    p, a = F.col(predicted), F.col(actual)
    return [
        F.count(F.lit(1)).alias(f"{prefix}rows"),
        F.avg((p - a) ** 2).alias(f"{prefix}mse"),
        F.avg(F.abs(p - a)).alias(f"{prefix}mae"),
        F.avg((F.log1p(p) - F.log1p(a)) ** 2).alias(f"{prefix}msle"),
        F.avg((F.log1p(p * 60.0) - F.log1p(a * 60.0)) ** 2).alias(f"{prefix}msle_seconds"),
        F.var_pop(a).alias(f"{prefix}var"),
    ]


def _metrics_of(row: Row | None, prefix: str) -> dict:
    if row is None or not row[f"{prefix}rows"]:
        return dict.fromkeys(METRIC_NAMES, float("nan"))
    mse, var = float(row[f"{prefix}mse"]), float(row[f"{prefix}var"] or 0.0)
    return {
        "rmse_minutes": mse**0.5,
        "mae_minutes": float(row[f"{prefix}mae"]),
        "rmsle": float(row[f"{prefix}msle"]) ** 0.5,
        "rmsle_seconds": float(row[f"{prefix}msle_seconds"]) ** 0.5,
        "r2": 1.0 - mse / var if var > 0 else float("nan"),
        "rows": int(row[f"{prefix}rows"]),
    }


def regression_metrics(df: DataFrame, predicted: str = PREDICTED_MINUTES, actual: str = ACTUAL_MINUTES) -> dict:
    """One aggregation over (predicted, actual) minutes: rmse_minutes, mae_minutes, rmsle, rmsle_seconds, r2, rows."""
    return _metrics_of(df.agg(*_metric_columns(predicted, actual, "")).first(), "")


def regression_metrics_by(
    df: DataFrame, key: str, predicted: Sequence[str], actual: str = ACTUAL_MINUTES
) -> dict[str, dict[str, dict]]:
    """`regression_metrics` for several prediction columns and every value of `key`, in one aggregation:
    {key value: {predicted column: metrics}}."""
    columns = [c for i, name in enumerate(predicted) for c in _metric_columns(name, actual, f"_{i}_")]
    return {
        str(row[key]): {name: _metrics_of(row, f"_{i}_") for i, name in enumerate(predicted)}
        for row in df.groupBy(key).agg(*columns).collect()
    }


def _median(column: Column) -> Column:
    """percentile_approx: an element of the group (the lower middle one for even sizes), rank error 1e-3.

    An exact median would hold whole groups in memory; on millions of trips per zone pair that is a risk."""
    return F.percentile_approx(column, 0.5, MEDIAN_ACCURACY)


def zone_pair_medians(train: DataFrame) -> DataFrame:
    """Median duration (minutes) per pickup/dropoff zone pair, per pickup zone and overall, from training trips.

    Columns: pickup_location_id, dropoff_location_id (null = any), median_minutes, level (2 pair, 1 zone, 0 all).
    """
    minutes = F.col("duration_s") / F.lit(60.0)

    by_pair = train.groupBy("pickup_location_id", "dropoff_location_id").agg(
        _median(minutes).alias("median_minutes"), F.lit(2).alias("level")
    )
    by_zone = train.groupBy("pickup_location_id").agg(
        F.lit(None).cast("int").alias("dropoff_location_id"),
        _median(minutes).alias("median_minutes"),
        F.lit(1).alias("level"),
    )
    overall = train.agg(
        F.lit(None).cast("int").alias("pickup_location_id"),
        F.lit(None).cast("int").alias("dropoff_location_id"),
        _median(minutes).alias("median_minutes"),
        F.lit(0).alias("level"),
    )
    return by_pair.unionByName(by_zone).unionByName(overall)


def with_baseline_prediction(medians: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Step adding `baseline_minutes`: the pair median, else the pickup-zone median, else the overall median."""
    pairs = medians.filter("level = 2").select(
        "pickup_location_id", "dropoff_location_id", F.col("median_minutes").alias("_pair")
    )
    zones = medians.filter("level = 1").select("pickup_location_id", F.col("median_minutes").alias("_zone"))
    overall = medians.filter("level = 0").select(F.col("median_minutes").alias("_all"))

    def step(df: DataFrame) -> DataFrame:
        return (
            df.join(pairs, on=["pickup_location_id", "dropoff_location_id"], how="left")
            .join(zones, on="pickup_location_id", how="left")
            .crossJoin(overall)
            .withColumn(BASELINE_MINUTES, F.coalesce("_pair", "_zone", "_all"))
            .drop("_pair", "_zone", "_all")
        )

    return step


def as_regime(trips: DataFrame, regime: Regime) -> DataFrame:
    """The trips as a request in `regime` gives them, leaving out those that cannot be put in it:
    recorded_distance keeps trips with a recorded distance; zones_only drops the distance (trips with both zones);
    coordinates_only drops distance and zones and gives coordinates: the trip's own, else its zones' centroids
    (TLC files since 2016 have zones only)."""
    no_distance = F.lit(None).cast("double")
    if regime == "recorded_distance":
        return trips.filter(F.col("trip_distance").isNotNull())
    if regime == "zones_only":
        both = F.col("pickup_location_id").isNotNull() & F.col("dropoff_location_id").isNotNull()
        return trips.filter(both).withColumn("trip_distance", no_distance)
    pu_lat, pu_lon = zone_centroid_sql("pickup_location_id")
    do_lat, do_lon = zone_centroid_sql("dropoff_location_id")
    coordinates = {
        "pickup_latitude": pu_lat,
        "pickup_longitude": pu_lon,
        "dropoff_latitude": do_lat,
        "dropoff_longitude": do_lon,
    }
    given = trips.withColumns({name: F.coalesce(F.col(name), F.expr(expr)) for name, expr in coordinates.items()})
    complete = F.lit(True)
    for name in coordinates:
        complete = complete & F.col(name).isNotNull()
    return given.filter(complete).withColumns(
        {
            "pickup_location_id": F.lit(None).cast("int"),
            "dropoff_location_id": F.lit(None).cast("int"),
            "trip_distance": no_distance,
        }
    )
