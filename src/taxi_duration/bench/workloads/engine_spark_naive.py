"""The comparison workload on Spark written the way a course notebook does, with `fixes` to undo each habit."""

from __future__ import annotations

import math
from typing import Any

from taxi_duration.bench.workloads.common import (
    DROPOFF,
    EARTH_RADIUS_MILES,
    MAX_DURATION_S,
    MIN_DURATION_S,
    PICKUP,
    UNKNOWN_BOROUGH,
    Steps,
    Workload,
    csv_files,
    report_dict,
)
from taxi_duration.bench.workloads.engine_spark import (
    haversine_column,
    spark_feature_columns,
    spark_session,
    spark_summaries,
    spark_zone_frames,
)


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
    work: Workload, steps: Steps, driver_memory: str = "4g", fixes: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The same report and features written the way a course notebook does: CSV with inferSchema, timestamps
    as strings subtracted with unix_timestamp, a Python UDF for the distance, a count() after each step,
    200 shuffle partitions without AQE. Needs the CSV copy.

    `fixes` (for the ablation in benchmarks/spark_ablation.py) undoes one habit each: `schema` (schema on read),
    `typed_times` (timestamps as timestamps), `builtin` (built-in haversine), `no_counts` (no intermediate
    actions), `partitions` (8 shuffle partitions with AQE)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    if not work.csv:
        raise FileNotFoundError("spark-naive reads the CSV copy: generate it (formats csv)")
    results: dict[str, Any] = {}
    with steps.step("session"):
        spark = spark_session(
            naive=True,
            driver_memory=driver_memory,
            workspace=work.out / "spark",
            lecture_partitions="partitions" not in fixes,
        )
    zones, (pickup_zones, dropoff_zones) = spark_zone_frames(spark)
    count_every_step = "no_counts" not in fixes
    with steps.step("borough_report"):
        if "schema" in fixes:
            from taxi_duration.generate.synthetic import YELLOW_SCHEMA

            reader = spark.read.schema(YELLOW_SCHEMA).option("timestampFormat", "yyyy-MM-dd HH:mm:ss")
        else:
            reader = spark.read.option("inferSchema", True)
        raw = reader.option("header", True).csv(csv_files(work.csv))
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
        results["borough_report"] = report_dict(
            [r["borough"] for r in rows], [r["trips"] for r in rows], [r["mean"] for r in rows]
        )
    with steps.step("features"):
        haversine = F.udf(_haversine_python, DoubleType())
        with_zones = df.join(pickup_zones, on="PULocationID", how="left").join(
            dropoff_zones, on="DOLocationID", how="left"
        )
        if count_every_step:
            with_zones.count()
        distance = haversine_column() if "builtin" in fixes else haversine("lat1", "lon1", "lat2", "lon2")
        features = with_zones.select(*spark_feature_columns(pickup_time, pickup_epoch, distance))
        if count_every_step:
            features.count()
        target = str(work.out / "features")
        features.write.mode("overwrite").parquet(target)
        results["features"] = spark_summaries(spark.read.parquet(target))
    spark.stop()
    return results
