"""The generator's zone model as small Spark tables, broadcast to every trip: the pickup alias table, the dropoff
CDF bins of the gravity model (profile.py) and the attributes of every zone pair (typical miles, speed factor).

Destinations are sampled by inverse CDF through a broadcast table (pickup zone, CDF bin) -> candidate dropoff
intervals.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

from taxi_duration.generate.profile import (
    EARTH_RADIUS_MILES,
    GRAVITY,
    GRAVITY_OFFSET_MILES,
    ZONE_PRIOR,
    ZONE_SPREAD,
    alias_table,
    dropoff_attraction,
    gravity_power,
    mapped_zones,
    sample_profile,
)
from taxi_duration.zones import AIRPORT_ZONE_IDS

CDF_BINS = 256  # a power of two: u * CDF_BINS is exact, so bin lookup and interval test agree
# Relative speed of a zone (the speed model is in synthetic.py): a pair drives at the geometric mean of its two.
BOROUGH_SPEED = {
    "Manhattan": 1.0,
    "Brooklyn": 1.2,
    "Queens": 1.3,
    "Bronx": 1.25,
    "Staten Island": 1.4,
    "EWR": 1.5,
}
AIRPORT_SPEED = 1.5


def zone_miles(lat1: Column, lon1: Column, area1: Column, lat2: Column, lon2: Column, area2: Column) -> Column:
    """Typical straight-line miles between points of two zones: centroid haversine widened by zone size."""
    phi1, phi2 = F.radians(lat1), F.radians(lat2)
    a = F.pow(F.sin((phi2 - phi1) / 2), 2) + F.cos(phi1) * F.cos(phi2) * F.pow(F.sin(F.radians(lon2 - lon1) / 2), 2)
    centroid = 2 * EARTH_RADIUS_MILES * F.asin(F.sqrt(F.least(F.lit(1.0), a)))
    return F.sqrt(centroid * centroid + ZONE_SPREAD * (area1 + area2) / math.pi)


ZONE_TABLE_SCHEMA = StructType(
    [
        StructField("zone", IntegerType(), False),
        StructField("lat", DoubleType(), False),
        StructField("lon", DoubleType(), False),
        StructField("area", DoubleType(), False),
        StructField("borough", IntegerType(), False),
        StructField("speed", DoubleType(), False),
        StructField("attraction", DoubleType(), False),
        StructField("gravity_power", DoubleType(), False),
        StructField("slot", IntegerType(), False),  # alias table for pickups: slot = zone - 1
        StructField("slot_prob", DoubleType(), False),
        StructField("slot_alias", IntegerType(), False),
    ]
)


def zone_table(spark: SparkSession, service: str) -> DataFrame:
    """The 263 mapped zones with geometry, speed factor, dropoff attraction and the pickup alias table."""
    profile = sample_profile(service)
    probs, aliases = alias_table([count + ZONE_PRIOR for count in profile.pickup_counts])
    rows = [
        (
            zone.location_id,
            zone.centroid_lat or 0.0,
            zone.centroid_lon or 0.0,
            zone.area_sq_miles or 0.0,
            zone.borough_code,
            AIRPORT_SPEED if zone.location_id in AIRPORT_ZONE_IDS else BOROUGH_SPEED.get(zone.borough, 1.0),
            attraction,
            gravity_power(zone, service),
            slot,
            probs[slot],
            aliases[slot] + 1,
        )
        for slot, (zone, attraction) in enumerate(zip(mapped_zones(), dropoff_attraction(service), strict=True))
    ]
    return spark.createDataFrame(rows, schema=ZONE_TABLE_SCHEMA)


def zone_pairs(zones: DataFrame) -> DataFrame:
    """Every (pickup, dropoff) pair of mapped zones with its typical miles, speed factor and boroughs."""
    pickups = zones.select(
        *(
            F.col(name).alias(f"pickup_{name}")
            for name in ("zone", "lat", "lon", "area", "borough", "speed", "gravity_power")
        )
    )
    dropoffs = zones.select(
        *(
            F.col(name).alias(f"dropoff_{name}")
            for name in ("zone", "lat", "lon", "area", "borough", "speed", "attraction")
        )
    )
    return pickups.crossJoin(dropoffs).select(
        F.col("pickup_zone").alias("pickup"),
        F.col("dropoff_zone").alias("dropoff"),
        zone_miles(*(F.col(f"{end}_{name}") for end in ("pickup", "dropoff") for name in ("lat", "lon", "area"))).alias(
            "base_miles"
        ),
        F.sqrt(F.col("pickup_speed") * F.col("dropoff_speed")).alias("pair_speed"),
        F.col("pickup_borough"),
        F.col("dropoff_borough"),
        F.col("dropoff_attraction"),
        F.col("pickup_gravity_power"),
    )


def dropoff_bins(pairs: DataFrame, service: str) -> DataFrame:
    """(pickup, bin) -> dropoffs whose interval [lo, hi) of the gravity CDF given pickup overlaps the bin."""
    deterrence = F.pow(F.col("base_miles") + GRAVITY_OFFSET_MILES, -F.col("pickup_gravity_power"))
    same_zone = F.when(F.col("pickup") == F.col("dropoff"), GRAVITY[service].same_zone).otherwise(1.0)
    weight = F.col("dropoff_attraction") * deterrence * same_zone
    by_pickup = Window.partitionBy("pickup").orderBy("dropoff")
    before = by_pickup.rowsBetween(Window.unboundedPreceding, -1)
    everything = by_pickup.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    cdf = (
        pairs.coalesce(1)  # 69,169 rows: one partition satisfies the window's clustering without a shuffle
        .withColumn("weight", weight)
        .withColumn("lo", F.coalesce(F.sum("weight").over(before), F.lit(0.0)) / F.sum("weight").over(everything))
        .withColumn("hi", F.coalesce(F.lead("lo").over(by_pickup), F.lit(1.0)))
        .where(F.col("hi") > F.col("lo"))
    )
    bins = F.sequence(F.floor(F.col("lo") * CDF_BINS), F.ceil(F.col("hi") * CDF_BINS) - 1).cast("array<int>")
    return cdf.select("pickup", F.explode(bins).alias("bin"), "dropoff", "lo", "hi")


@dataclass(frozen=True)
class Lookups:
    """The small broadcast tables of one service: pickup alias slots, dropoff CDF bins, pair attributes."""

    slots: DataFrame  # slot, slot_prob, slot_alias
    bins: DataFrame  # pickup, bin, dropoff, lo, hi
    pairs: DataFrame  # pickup, dropoff, base_miles, pair_speed, pickup_borough, dropoff_borough


# Built once per session and service, then cached: every month generated afterwards reuses them.
_LOOKUPS: weakref.WeakKeyDictionary[SparkSession, dict[str, Lookups]] = weakref.WeakKeyDictionary()


def lookups(spark: SparkSession, service: str) -> Lookups:
    """The service's lookup tables for this session (computed by Spark from the 263-row zone table)."""
    per_service = _LOOKUPS.setdefault(spark, {})
    if service not in per_service:
        zones = zone_table(spark, service)
        pairs = zone_pairs(zones)
        per_service[service] = Lookups(
            slots=zones.select("slot", "slot_prob", "slot_alias").cache(),
            bins=dropoff_bins(pairs, service).cache(),
            pairs=pairs.drop("dropoff_attraction", "pickup_gravity_power").cache(),
        )
    return per_service[service]
