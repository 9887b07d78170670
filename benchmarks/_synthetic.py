"""What the in-process Spark benchmarks share: a small local session, synthetic canonical trips built from
`spark.range`, and a random travel-time table of a given size."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from taxi_duration.features.travel_times import TravelTimes


def local_session(driver_memory: str) -> SparkSession:
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "America/New_York")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def synthetic_trips(spark: SparkSession, rows: int) -> DataFrame:
    """`rows` trips over 60 days of 2024 between all zone pairs, no coordinates, distances 0-19.9 miles and a
    duration that grows with the distance."""
    from pyspark.sql import functions as F

    return spark.range(rows, numPartitions=2).select(
        F.timestamp_seconds(F.lit(1_704_067_200) + (F.col("id") * 37) % (86_400 * 60)).alias("pickup_datetime"),
        (F.col("id") * 7 % 263 + 1).cast("int").alias("pickup_location_id"),
        (F.col("id") * 13 % 263 + 1).cast("int").alias("dropoff_location_id"),
        *[F.lit(None).cast("double").alias(c) for c in ("pickup_latitude", "pickup_longitude")],
        *[F.lit(None).cast("double").alias(c) for c in ("dropoff_latitude", "dropoff_longitude")],
        (F.col("id") % 200 / 10.0).alias("trip_distance"),
        F.col("id").cast("string").alias("trip_id"),
        (F.lit(120.0) + F.col("id") % 200 * 18.0 + F.col("id") % 97).alias("duration_s"),
    )


def random_travel_times(rng: random.Random, pairs: int) -> TravelTimes:
    """A travel-time table of `pairs` random zone pairs, as `train` would learn from more or fewer trips."""
    from taxi_duration.features.travel_times import TravelTimes, pair_key

    chosen = rng.sample([pair_key(p, d) for p in range(1, 264) for d in range(1, 264)], pairs)
    return TravelTimes(
        min_trips=5,
        pairs={k: (float(rng.randint(5, 500)), rng.uniform(0.5, 20), rng.uniform(3, 60)) for k in chosen},
        boroughs={pair_key(b, c): (100.0, 3.0, 15.0) for b in range(1, 7) for c in range(1, 7)},
        overall=(1000.0, 2.5, 14.0),
    )
