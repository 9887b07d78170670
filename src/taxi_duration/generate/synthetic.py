"""Spark-native synthetic NYC taxi trips in the exact TLC yellow/green schema, deterministic for a seed.

Every trip is computed by Spark from `spark.range`: its random numbers are hashed from (row id, seed, stream),
its zones drawn through the broadcast tables of lookups.py (the zone model of profile.py), its pickup time from
the sample's weekday and hour profile, its distance and duration from the speed model below, its money columns
from the meter (fares.py), then real-world dirt applied. output.py writes it, one dataset per month.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass, fields
from datetime import date

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from taxi_duration.errors import ConfigError
from taxi_duration.generate.fares import tariff_for, with_fares
from taxi_duration.generate.lookups import CDF_BINS, lookups
from taxi_duration.generate.profile import HOUR_PRIOR, SampleProfile, alias_table, sample_profile
from taxi_duration.zones import MAX_ZONE_ID, UNKNOWN_ZONE_IDS


def _tlc_schema(*columns: str) -> StructType:
    """A TLC file schema from "name type" pairs (Spark's JSON type names); every column nullable, as in the files."""
    pairs = (column.split() for line in columns for column in line.split(","))
    return StructType.fromJson({"fields": [{"name": n, "type": t, "nullable": True, "metadata": {}} for n, t in pairs]})


YELLOW_SCHEMA = _tlc_schema(
    "VendorID integer, tpep_pickup_datetime timestamp, tpep_dropoff_datetime timestamp, passenger_count long",
    "trip_distance double, RatecodeID long, store_and_fwd_flag string, PULocationID integer, DOLocationID integer",
    "payment_type long, fare_amount double, extra double, mta_tax double, tip_amount double, tolls_amount double",
    "improvement_surcharge double, total_amount double, congestion_surcharge double, Airport_fee double",
)
GREEN_SCHEMA = _tlc_schema(
    "VendorID integer, lpep_pickup_datetime timestamp, lpep_dropoff_datetime timestamp, store_and_fwd_flag string",
    "RatecodeID long, PULocationID integer, DOLocationID integer, passenger_count long, trip_distance double",
    "fare_amount double, extra double, mta_tax double, tip_amount double, tolls_amount double, ehail_fee double",
    "improvement_surcharge double, total_amount double, payment_type long, trip_type long",
    "congestion_surcharge double",
)
YELLOW_COLUMNS: list[str] = YELLOW_SCHEMA.fieldNames()
GREEN_COLUMNS: list[str] = GREEN_SCHEMA.fieldNames()
SCHEMAS = {"yellow": YELLOW_SCHEMA, "green": GREEN_SCHEMA}
DATETIME_PREFIX = {"yellow": "tpep", "green": "lpep"}

MIN_PARTITIONS = 2
ROWS_PER_PARTITION = 1_000_000
MASK64 = (1 << 64) - 1
# Independent random streams of a trip (stream numbers are part of the output: changing one changes the data).
STREAMS = {
    "pickup": 1,
    "dropoff": 2,
    "day": 3,
    "hour": 4,
    "second": 5,
    "distance_1": 6,
    "distance_2": 7,
    "speed_1": 8,
    "speed_2": 9,
    "time_dirt": 20,
    "zone_dirt": 21,
    "zone_end": 22,
    "zone_kind": 23,
    "distance_dirt": 24,
    "passenger_dirt": 25,
    "passengers": 26,
    "payment": 27,
    "tip": 28,
    "toll": 29,
    "vendor": 30,
    "store_and_forward": 31,
    "trip_type": 32,
}
DUPLICATE_STREAM = 90  # hash stream of the duplicate choice (keyed by row pair)

# Distance: the pair's typical miles (lookups.zone_miles), times a road factor, times lognormal noise; recorded
# with two decimals like the meter.
ROAD_FACTOR = 1.3
DISTANCE_SIGMA = 0.25
MIN_DISTANCE_MILES = 0.05

# Speed (mph) = BASE * hour factor * zone factors * distance factor * lognormal noise.
BASE_SPEED_MPH = 7.1
SPEED_DISTANCE_POWER = 0.42  # longer trips use avenues and highways: factor ((d + 1) / 2) ** power
SPEED_SIGMA = 0.35
MIN_DURATION_S = 60
MAX_DURATION_S = 5 * 3600
# Relative speed by hour (0-23), weekdays then weekends; from median speeds of the 2019-03 sample.
HOUR_SPEED_WEEKDAY = (
    *(1.55, 1.6, 1.7, 1.7, 1.8, 1.65, 1.5, 1.25, 1.0, 0.93, 0.93, 0.93),
    *(0.97, 1.0, 1.0, 1.02, 1.0, 1.0, 1.03, 1.15, 1.2, 1.25, 1.28, 1.32),
)
HOUR_SPEED_WEEKEND = (
    *(1.35, 1.45, 1.5, 1.55, 1.65, 1.7, 1.6, 1.6, 1.45, 1.35, 1.3, 1.2),
    *(1.15, 1.15, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.2, 1.25, 1.25, 1.3),
)

# Categorical columns: (value, probability).
VENDOR_SHARES = ((1, 0.36), (2, 0.64))
PASSENGER_SHARES = ((1, 0.71), (2, 0.15), (3, 0.045), (4, 0.02), (5, 0.045), (6, 0.03))
PAYMENT_SHARES = ((1, 0.72), (2, 0.265), (3, 0.008), (4, 0.007))
STORE_AND_FORWARD_SHARE = 0.005
GREEN_DISPATCH_SHARE = 0.03  # trip_type 2
UNKNOWN_ZONE_SHARE_264 = 0.7  # of dirty zones, "Unknown" (264) rather than "NA" (265)
DAY_LONG_MIN_S, DAY_LONG_SPAN_S = 86_000, 400
WEEKEND_START = 5  # date.weekday() of Saturday


@dataclass(frozen=True)
class DirtRates:
    """How often each kind of real-world dirt appears, as a fraction of rows."""

    zero_duration: float = 0.001
    day_long: float = 0.0005
    zero_distance: float = 0.01
    unknown_zone: float = 0.01
    null_passenger_count: float = 0.02
    dropoff_before_pickup: float = 0.0002
    duplicate: float = 0.001

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"dirt rate {field.name}={value} is not a fraction in [0, 1]")
        if self.zero_duration + self.day_long + self.dropoff_before_pickup > 1.0:
            raise ConfigError("zero_duration + day_long + dropoff_before_pickup exceed 1")
        if self.duplicate > 0.5:
            raise ConfigError(f"dirt rate duplicate={self.duplicate} exceeds 0.5 (every row a copy)")


def _doubles(values: list[float] | tuple[float, ...]) -> Column:
    """A literal array<double> (one literal, not one per element)."""
    return F.lit(np.asarray(values, dtype=np.float64))


def _ints(values: list[int] | tuple[int, ...]) -> Column:
    """A literal array<int>."""
    return F.lit(np.asarray(values, dtype=np.int32))


def _at(values: Column, index: Column) -> Column:
    """values[index], 0-based."""
    return F.element_at(values, (index + 1).cast("int"))


def _alias_sample(weights: list[float], u: Column) -> Column:
    """A 0-based index drawn with the given weights from one uniform (alias method, literal arrays)."""
    probs, aliases = alias_table(weights)
    scaled = u * len(weights)
    slot = F.floor(scaled)
    return F.when(scaled - slot < _at(_doubles(probs), slot), slot).otherwise(_at(_ints(aliases), slot)).cast("int")


def _categorical(shares: tuple[tuple[int, float], ...], u: Column) -> Column:
    """The value whose cumulative-share segment holds u (the last value takes any rounding slack)."""
    result: Column = F.lit(shares[-1][0])
    cumulative = sum(share for _, share in shares[:-1])
    for value, share in reversed(shares[:-1]):
        result = F.when(u < cumulative, F.lit(value)).otherwise(result)
        cumulative -= share
    return result


def stream_key(seed: int, stream: int) -> int:
    """A 64-bit key per (seed, stream): splitmix64 of the pair, as a signed long."""
    z = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return z - (1 << 64) if z >= 1 << 63 else z


def _uniform(key: Column, seed: int, stream: int) -> Column:
    """A uniform in [0, 1) hashed from (row key, seed, stream): independent of the partitioning."""
    bits = F.xxhash64(key, F.lit(stream_key(seed, stream)).cast("long"))
    return F.shiftrightunsigned(bits, 11).cast("double") / float(1 << 53)


def _normal(u1: Column, u2: Column) -> Column:
    """A standard normal from two uniforms (Box-Muller)."""
    return F.sqrt(-2.0 * F.log(1.0 - u1)) * F.cos(2.0 * math.pi * u2)


def random_draws(ids: DataFrame, seed: int) -> DataFrame:
    """Every random number a trip needs, as u_<name> columns hashed from (id, seed, stream)."""
    return ids.select(
        "id", *(_uniform(F.col("id"), seed, stream).alias(f"u_{name}") for name, stream in STREAMS.items())
    )


def _partitions(rows: int, partitions: int | None) -> int:
    """The requested partition count, or one per ROWS_PER_PARTITION rows (at least MIN_PARTITIONS)."""
    if partitions is not None:
        if partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {partitions}")
        return partitions
    return max(MIN_PARTITIONS, math.ceil(rows / ROWS_PER_PARTITION))


def with_copies(trips: DataFrame, rows: int, rate: float, seed: int) -> DataFrame:
    """Exact duplicates without a shuffle: a chosen pair (2k, 2k+1) emits row 2k twice and row 2k+1 never."""
    pair = F.floor(F.col("id") / 2)
    chosen = (_uniform(pair, seed, DUPLICATE_STREAM) < 2.0 * rate) & (pair * 2 + 1 < rows)
    copies = F.when(chosen, F.when(F.col("id") % 2 == 0, 2).otherwise(0)).otherwise(1) if rate > 0 else F.lit(1)
    return trips.withColumn("copy", F.explode(F.array_repeat(F.lit(0), copies))).drop("copy", "id")


def trip_places(spark: SparkSession, ids: DataFrame, service: str, seed: int) -> DataFrame:
    """Random draws, pickup zone (alias method) and dropoff zone (gravity model) per trip, by broadcast joins."""
    tables = lookups(spark, service)
    scaled = F.col("u_pickup") * MAX_ZONE_ID
    picked = (
        random_draws(ids, seed)
        .withColumn("slot", F.floor(scaled).cast("int"))
        .join(F.broadcast(tables.slots), on="slot")
        .withColumns(
            {
                "pickup": F.when(scaled - F.col("slot") < F.col("slot_prob"), F.col("slot") + 1)
                .otherwise(F.col("slot_alias"))
                .cast("int"),
                "bin": F.floor(F.col("u_dropoff") * CDF_BINS).cast("int"),
            }
        )
        .drop("slot", "slot_prob", "slot_alias")
    )
    return (
        picked.join(F.broadcast(tables.bins), on=["pickup", "bin"])
        .where((F.col("u_dropoff") >= F.col("lo")) & (F.col("u_dropoff") < F.col("hi")))
        .drop("bin", "lo", "hi")
        .join(F.broadcast(tables.pairs), on=["pickup", "dropoff"])
    )


def synthetic_trips(
    spark: SparkSession,
    rows: int,
    year: int,
    month: int,
    seed: int,
    service: str = "yellow",
    dirt: DirtRates = DirtRates(),
    partitions: int | None = None,
) -> DataFrame:
    """Exactly `rows` TLC-schema trips picked up in year-month, computed by Spark from spark.range."""
    if service not in SCHEMAS:
        raise ConfigError(f"service {service!r} is not one of {sorted(SCHEMAS)}")
    if rows < 0 or not 1 <= month <= 12 or not 1 <= year <= 9999:
        raise ConfigError(f"need rows >= 0 and a valid month, got rows={rows}, year={year}, month={month}")
    ids = spark.range(0, rows, 1, numPartitions=_partitions(rows, partitions))
    trips = with_pickup_time(trip_places(spark, ids, service, seed), year, month, sample_profile(service))
    # copies are made once every random number is drawn; the explode also splits the generated code in two
    # methods small enough for the JIT (HotSpot does not compile methods over 8,000 bytes of bytecode)
    trips = with_copies(with_categories(trips, dirt), rows, dirt.duplicate, seed)
    trips = with_fares(with_distance_and_duration(trips), tariff_for(year, month), service)
    return with_recorded_trip(trips, service, dirt)


def with_pickup_time(trips: DataFrame, year: int, month: int, profile: SampleProfile) -> DataFrame:
    """Day by weekday rate, hour by the sample's hourly profile, second uniform in the hour (NY wall clock)."""
    weekdays = [date(year, month, day).weekday() for day in range(1, calendar.monthrange(year, month)[1] + 1)]
    day = _alias_sample([profile.weekday_rates[weekday] for weekday in weekdays], F.col("u_day")) + 1
    hour = _alias_sample([count + HOUR_PRIOR for count in profile.hour_counts], F.col("u_hour"))
    second = F.floor(F.col("u_second") * 3600).cast("int")
    weekend = _at(_ints([int(weekday >= WEEKEND_START) for weekday in weekdays]), F.col("day") - 1)
    pickup_at = F.make_timestamp(
        F.lit(year), F.lit(month), F.col("day"), F.col("hour"), F.floor(F.col("second") / 60), F.col("second") % 60
    )
    return (
        trips.withColumns({"day": day, "hour": hour, "second": second})
        .withColumns({"weekend": weekend, "pickup_at": pickup_at})
        .drop("day", "second")
    )


def with_categories(trips: DataFrame, dirt: DirtRates) -> DataFrame:
    """Vendor, passengers, flags, payment and trip type from their shares; dirty passenger counts and zones."""
    unknown = F.col("u_zone_dirt") < dirt.unknown_zone
    u_which = F.col("u_zone_end")  # pickup only, both, dropoff only: a third each
    unknown_id = F.when(F.col("u_zone_kind") < UNKNOWN_ZONE_SHARE_264, UNKNOWN_ZONE_IDS[0]).otherwise(
        UNKNOWN_ZONE_IDS[1]
    )
    passengers = _categorical(PASSENGER_SHARES, F.col("u_passengers"))
    return trips.withColumns(
        {
            "VendorID": _categorical(VENDOR_SHARES, F.col("u_vendor")),
            "passenger_count": F.when(F.col("u_passenger_dirt") >= dirt.null_passenger_count, passengers),
            "store_and_fwd_flag": F.when(F.col("u_store_and_forward") < STORE_AND_FORWARD_SHARE, "Y").otherwise("N"),
            "payment_type": _categorical(PAYMENT_SHARES, F.col("u_payment")),
            "trip_type": F.when(F.col("u_trip_type") < GREEN_DISPATCH_SHARE, 2).otherwise(1),
            "PULocationID": F.when(unknown & (u_which < 2 / 3), unknown_id).otherwise(F.col("pickup")),
            "DOLocationID": F.when(unknown & (u_which >= 1 / 3), unknown_id).otherwise(F.col("dropoff")),
        }
    )


def with_distance_and_duration(trips: DataFrame) -> DataFrame:
    """Meter miles (zone distance, road factor, noise) and the natural duration from the speed model."""
    noise = F.exp(DISTANCE_SIGMA * _normal(F.col("u_distance_1"), F.col("u_distance_2")))
    miles = F.greatest(F.lit(MIN_DISTANCE_MILES), F.round(ROAD_FACTOR * F.col("base_miles") * noise, 2))
    hour_speed = _at(_doubles(HOUR_SPEED_WEEKDAY + HOUR_SPEED_WEEKEND), F.col("weekend") * 24 + F.col("hour"))
    mph = (
        BASE_SPEED_MPH
        * hour_speed
        * F.col("pair_speed")
        * F.pow((F.col("miles") + 1.0) / 2.0, SPEED_DISTANCE_POWER)
        * F.exp(SPEED_SIGMA * _normal(F.col("u_speed_1"), F.col("u_speed_2")))
    )
    natural = F.round(F.col("miles") / mph * 3600.0).cast("long")
    return trips.withColumn("miles", miles).withColumn(
        "natural_s", F.least(F.greatest(natural, F.lit(MIN_DURATION_S)), F.lit(MAX_DURATION_S))
    )


def with_recorded_trip(trips: DataFrame, service: str, dirt: DirtRates) -> DataFrame:
    """The TLC columns as recorded: dirty durations and distances applied, in the service's order and types."""
    # one uniform splits the exclusive kinds of recorded duration
    u_time = F.col("u_time_dirt")
    zero_end = dirt.zero_duration
    day_end = zero_end + dirt.day_long
    before_end = day_end + dirt.dropoff_before_pickup
    day_long_s = DAY_LONG_MIN_S + F.floor((u_time - zero_end) / max(dirt.day_long, 1e-12) * DAY_LONG_SPAN_S)
    duration = (
        F.when(u_time < zero_end, F.lit(0))
        .when(u_time < day_end, F.least(day_long_s, F.lit(DAY_LONG_MIN_S + DAY_LONG_SPAN_S - 1)))
        .when(u_time < before_end, -F.col("natural_s"))
        .otherwise(F.col("natural_s"))
        .cast("long")
    )
    prefix = DATETIME_PREFIX[service]
    columns = {
        f"{prefix}_pickup_datetime": F.col("pickup_at"),
        f"{prefix}_dropoff_datetime": F.timestamp_seconds(F.unix_seconds(F.col("pickup_at")) + duration),
        "trip_distance": F.when(F.col("u_distance_dirt") < dirt.zero_distance, F.lit(0.0)).otherwise(F.col("miles")),
        "ehail_fee": F.lit(None),
    }
    schema = SCHEMAS[service]
    return trips.select(
        *(columns.get(field.name, F.col(field.name)).cast(field.dataType).alias(field.name) for field in schema.fields)
    )
