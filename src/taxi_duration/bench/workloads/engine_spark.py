"""The comparison workload on Spark, the project's way (and the sessions and pieces the naive run shares)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from taxi_duration.bench.workloads.common import (
    BOOST_DEPTH,
    CAP_MODULUS,
    COLUMNS,
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
    parquet_files,
    report_dict,
    zone_rows,
)


def spark_session(naive: bool, driver_memory: str, workspace: Path, lecture_partitions: bool = True) -> Any:
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


def spark_zone_frames(spark: Any) -> tuple[Any, Any]:
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


def spark_summaries(features: Any) -> dict[str, Any]:
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


def spark_report(trips: Any, duration: Any, zones: Any) -> dict[str, Any]:
    """Rows read, valid trips and the borough report in one job: trips are counted and summed per pickup zone id
    (an integer key, 265 groups), and only those rows are joined to the zone table and rolled up per borough.
    The earlier shape, a count job and then every trip joined and grouped by the borough name, took about 1.5x
    as long on 50M trips (docs/benchmarks.md, "Where the time goes")."""
    from pyspark.sql import functions as F

    valid = duration.between(MIN_DURATION_S, MAX_DURATION_S)
    per_zone = trips.groupBy("PULocationID").agg(
        F.count(F.lit(1)).alias("rows_read"),
        F.count(F.when(valid, 1)).alias("trips"),
        F.sum(F.when(valid, duration)).alias("seconds"),
    )
    rows = (
        per_zone.join(
            F.broadcast(zones.select("LocationID", "borough")), per_zone["PULocationID"] == zones["LocationID"], "left"
        )
        .groupBy(F.coalesce(F.col("borough"), F.lit(UNKNOWN_BOROUGH)).alias("borough"))
        .agg(F.sum("rows_read").alias("rows_read"), F.sum("trips").alias("trips"), F.sum("seconds").alias("seconds"))
        .collect()
    )
    found = [r for r in rows if r["trips"]]  # a borough with no valid trip is not in the report
    return {
        "rows_read": sum(int(r["rows_read"]) for r in rows),
        "valid_trips": sum(int(r["trips"]) for r in rows),
        "borough_report": report_dict(
            [r["borough"] for r in found], [r["trips"] for r in found], [r["seconds"] / r["trips"] for r in found]
        ),
    }


def spark_feature_columns(local_pickup: Any, pickup_epoch: Any, centroid_miles: Any) -> list[Any]:
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


def haversine_column() -> Any:
    from pyspark.sql import functions as F

    lat1, lat2 = F.radians("lat1"), F.radians("lat2")
    a = F.pow(F.sin((lat2 - lat1) / 2), 2) + F.cos(lat1) * F.cos(lat2) * F.pow(
        F.sin((F.radians("lon2") - F.radians("lon1")) / 2), 2
    )
    return 2 * EARTH_RADIUS_MILES * F.asin(F.sqrt(a))


def run_spark(work: Workload, steps: Steps, driver_memory: str = "4g", models: Models | None = None) -> dict[str, Any]:
    """The workload the project's way: schema-typed Parquet reads with column pruning, built-in functions only,
    broadcast joins of the zone table, AQE with few shuffle partitions, one action per result."""
    from pyspark.sql import functions as F

    results: dict[str, Any] = {}
    with steps.step("session"):
        spark = spark_session(naive=False, driver_memory=driver_memory, workspace=work.out / "spark")
    zones, (pickup_zones, dropoff_zones) = spark_zone_frames(spark)
    trips = spark.read.parquet(*parquet_files(work.parquet)).select(*COLUMNS)
    duration = F.unix_seconds(F.col(DROPOFF)) - F.unix_seconds(F.col(PICKUP))
    valid = trips.withColumn("duration_s", duration).where(F.col("duration_s").between(MIN_DURATION_S, MAX_DURATION_S))
    with steps.step("borough_report"):
        results.update(spark_report(trips, duration, zones))
    with steps.step("features"):
        # Spark reads INT96 as instants and shows them in the session zone (New York): no conversion needed
        features = (
            valid.join(F.broadcast(pickup_zones), on="PULocationID", how="left")
            .join(F.broadcast(dropoff_zones), on="DOLocationID", how="left")
            .select(*spark_feature_columns(F.col(PICKUP), F.unix_seconds(F.col(PICKUP)), haversine_column()))
        )
        target = str(work.out / "features")
        features.write.mode("overwrite").parquet(target)
        results["features"] = spark_summaries(spark.read.parquet(target))
    if work.train_rows > 0:
        with steps.step("train"):
            results["training"] = _train_mllib(spark.read.parquet(target), work.train_rows, models or Models())
    if work.csv:
        with steps.step("load_csv"):
            from taxi_duration.generate.synthetic import YELLOW_SCHEMA

            # CSV columns are positional: the schema on read is the whole TLC yellow schema
            raw = (
                spark.read.schema(YELLOW_SCHEMA)
                .option("header", True)
                .option("timestampFormat", "yyyy-MM-dd HH:mm:ss")
                .csv(csv_files(work.csv))
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
