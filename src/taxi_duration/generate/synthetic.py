"""Spark-native synthetic NYC taxi trips in the exact TLC yellow/green schema, deterministic for a seed."""

from __future__ import annotations

import calendar
import csv
import io
import math
import re
import weakref
from collections import Counter
from dataclasses import dataclass, fields
from datetime import date, datetime
from functools import lru_cache
from importlib import resources

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from taxi_duration.errors import ConfigError
from taxi_duration.zones import (
    AIRPORT_ZONE_IDS,
    BOROUGH_CODES,
    MAX_ZONE_ID,
    UNKNOWN_ZONE_IDS,
    Zone,
    load_zones,
)

YELLOW_SCHEMA = StructType(
    [
        StructField("VendorID", IntegerType(), True),
        StructField("tpep_pickup_datetime", TimestampType(), True),
        StructField("tpep_dropoff_datetime", TimestampType(), True),
        StructField("passenger_count", LongType(), True),
        StructField("trip_distance", DoubleType(), True),
        StructField("RatecodeID", LongType(), True),
        StructField("store_and_fwd_flag", StringType(), True),
        StructField("PULocationID", IntegerType(), True),
        StructField("DOLocationID", IntegerType(), True),
        StructField("payment_type", LongType(), True),
        StructField("fare_amount", DoubleType(), True),
        StructField("extra", DoubleType(), True),
        StructField("mta_tax", DoubleType(), True),
        StructField("tip_amount", DoubleType(), True),
        StructField("tolls_amount", DoubleType(), True),
        StructField("improvement_surcharge", DoubleType(), True),
        StructField("total_amount", DoubleType(), True),
        StructField("congestion_surcharge", DoubleType(), True),
        StructField("Airport_fee", DoubleType(), True),
    ]
)
GREEN_SCHEMA = StructType(
    [
        StructField("VendorID", IntegerType(), True),
        StructField("lpep_pickup_datetime", TimestampType(), True),
        StructField("lpep_dropoff_datetime", TimestampType(), True),
        StructField("store_and_fwd_flag", StringType(), True),
        StructField("RatecodeID", LongType(), True),
        StructField("PULocationID", IntegerType(), True),
        StructField("DOLocationID", IntegerType(), True),
        StructField("passenger_count", LongType(), True),
        StructField("trip_distance", DoubleType(), True),
        StructField("fare_amount", DoubleType(), True),
        StructField("extra", DoubleType(), True),
        StructField("mta_tax", DoubleType(), True),
        StructField("tip_amount", DoubleType(), True),
        StructField("tolls_amount", DoubleType(), True),
        StructField("ehail_fee", DoubleType(), True),
        StructField("improvement_surcharge", DoubleType(), True),
        StructField("total_amount", DoubleType(), True),
        StructField("payment_type", LongType(), True),
        StructField("trip_type", LongType(), True),
        StructField("congestion_surcharge", DoubleType(), True),
    ]
)
YELLOW_COLUMNS: list[str] = YELLOW_SCHEMA.fieldNames()
GREEN_COLUMNS: list[str] = GREEN_SCHEMA.fieldNames()
SCHEMAS = {"yellow": YELLOW_SCHEMA, "green": GREEN_SCHEMA}
DATETIME_PREFIX = {"yellow": "tpep", "green": "lpep"}

# The real sample the profiles (zone popularity, hour of day, day of week) are derived from.
SAMPLE_FILE = "taxis_sample_2019-03.csv"
ZONE_PRIOR = 0.25  # pseudo-trips per zone, so every one of the 263 zones can appear
HOUR_PRIOR = 1.0  # pseudo-trips per hour of day
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

# Destination choice, a doubly-constrained gravity model: P(dropoff | pickup) ~ attraction(dropoff) *
# (miles + OFFSET) ** -power, times a same-zone weight; attractions are fitted so that dropoff shares match
# the sample. Airport pickups care little about distance. Sampled by inverse CDF through a broadcast table
# (pickup zone, CDF bin) -> candidate dropoff intervals.
GRAVITY_OFFSET_MILES = 0.5
AIRPORT_GRAVITY_POWER = 0.4
GRAVITY_FIT_ITERATIONS = 50
CDF_BINS = 256  # a power of two: u * CDF_BINS is exact, so bin lookup and interval test agree

# Distance: centroid haversine widened by the zones' own size (pickup points are spread over the zone),
# times a road factor, times lognormal noise; recorded with two decimals like the meter.
EARTH_RADIUS_MILES = 3958.8
ZONE_SPREAD = 0.75  # share of the zones' (area / pi) added in quadrature to the centroid distance
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
BOROUGH_SPEED = {
    "Manhattan": 1.0,
    "Brooklyn": 1.2,
    "Queens": 1.3,
    "Bronx": 1.25,
    "Staten Island": 1.4,
    "EWR": 1.5,
}
AIRPORT_SPEED = 1.5

# Categorical columns: (value, probability).
VENDOR_SHARES = ((1, 0.36), (2, 0.64))
PASSENGER_SHARES = ((1, 0.71), (2, 0.15), (3, 0.045), (4, 0.02), (5, 0.045), (6, 0.03))
PAYMENT_SHARES = ((1, 0.72), (2, 0.265), (3, 0.008), (4, 0.007))
STORE_AND_FORWARD_SHARE = 0.005
GREEN_DISPATCH_SHARE = 0.03  # trip_type 2
CARD = 1
NO_TIP_SHARE = 0.1  # card trips without a tip
TIP_MIN, TIP_SPAN = 0.12, 0.16  # tip share of the fare, uniform in [min, min + span]
TOLL_SHARE = 0.35  # inter-borough trips crossing a tolled bridge or tunnel
RATE_STANDARD, RATE_JFK, RATE_NEWARK = 1, 2, 3
JFK_ZONE, NEWARK_ZONE = 132, 1
SLOW_MPH = 12.0  # below it the meter charges by time
OVERNIGHT_HOURS = (20, 6)  # [20:00, 06:00)
RUSH_HOURS = (16, 20)  # weekdays [16:00, 20:00)
UNKNOWN_ZONE_SHARE_264 = 0.7  # of dirty zones, "Unknown" (264) rather than "NA" (265)
DAY_LONG_MIN_S, DAY_LONG_SPAN_S = 86_000, 400
WEEKEND_START = 5  # date.weekday() of Saturday
MTA_TAX = 0.5

YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Tariff:
    """TLC yellow/green rates in force from a month on (money in USD)."""

    start: int  # year * 100 + month
    initial: float
    unit: float  # per 1/5 mile, or per minute below SLOW_MPH
    jfk_flat: float
    newark_surcharge: float
    overnight: float
    rush: float
    improvement: float
    congestion: float | None  # yellow; green pays GREEN_CONGESTION
    airport_fee: float | None
    toll: float


GREEN_CONGESTION = 2.75
TARIFFS = (
    Tariff(200901, 2.5, 0.5, 52.0, 17.5, 0.5, 1.0, 0.3, None, None, 5.76),
    Tariff(201902, 2.5, 0.5, 52.0, 17.5, 0.5, 1.0, 0.3, 2.5, None, 5.76),
    Tariff(202201, 2.5, 0.5, 52.0, 17.5, 0.5, 1.0, 0.3, 2.5, 1.25, 6.55),
    Tariff(202301, 3.0, 0.7, 70.0, 20.0, 1.0, 2.5, 1.0, 2.5, 1.75, 6.94),
)


@dataclass(frozen=True)
class Gravity:
    """Destination choice of a service: distance decay and the weight of staying in the pickup zone."""

    power: float
    same_zone: float


# Green trips start in the (larger) outer-borough zones and stay closer to their pickup.
GRAVITY = {"yellow": Gravity(power=2.0, same_zone=0.45), "green": Gravity(power=2.75, same_zone=1.0)}


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


@dataclass(frozen=True)
class SampleProfile:
    """Trip counts of one service in the real sample: by pickup/dropoff zone, hour and weekday."""

    pickup_counts: tuple[int, ...]  # index 0 is zone 1
    dropoff_counts: tuple[int, ...]
    hour_counts: tuple[int, ...]  # 0-23
    weekday_rates: tuple[float, ...]  # mean trips per calendar day, Monday first


def month_row_counts(rows: int, start: str, months: int) -> list[tuple[int, int, int]]:
    """Split rows over months from start ("YYYY-MM") in proportion to their days, summing exactly to rows."""
    match = YEAR_MONTH.match(start)
    if match is None or int(match.group(1)) < 1 or not 1 <= int(match.group(2)) <= 12:
        raise ConfigError(f"start month {start!r} is not YYYY-MM")
    if months < 1 or rows < 0:
        raise ConfigError(f"need months >= 1 and rows >= 0, got months={months}, rows={rows}")
    year, month = int(match.group(1)), int(match.group(2))
    periods = []
    for offset in range(months):
        y, m = divmod(year * 12 + month - 1 + offset, 12)
        periods.append((y, m + 1, calendar.monthrange(y, m + 1)[1]))
    total_days = sum(days for _, _, days in periods)
    # largest remainder: floor every share, then give the left-over rows to the largest fractions
    shares = [rows * days // total_days for _, _, days in periods]
    remainders = [rows * days % total_days for _, _, days in periods]
    for index in sorted(range(months), key=lambda i: (-remainders[i], i))[: rows - sum(shares)]:
        shares[index] += 1
    return [(y, m, share) for (y, m, _), share in zip(periods, shares, strict=True)]


@lru_cache(maxsize=2)
def sample_profile(service: str) -> SampleProfile:
    """Zone, hour and weekday counts of the service's trips in the packaged real 2019-03 sample."""
    text = resources.files("taxi_duration").joinpath("data", SAMPLE_FILE).read_text(encoding="utf-8")
    pickups: Counter[int] = Counter()
    dropoffs: Counter[int] = Counter()
    hours: Counter[int] = Counter()
    per_date: Counter[date] = Counter()
    for row in csv.DictReader(io.StringIO(text)):
        if row["color"] != service:
            continue
        pickup = datetime.fromisoformat(row["tpep_pickup_datetime"])
        pickups[int(row["PULocationID"])] += 1
        dropoffs[int(row["DOLocationID"])] += 1
        hours[pickup.hour] += 1
        per_date[pickup.date()] += 1
    first = min(per_date)
    days_in_month = calendar.monthrange(first.year, first.month)[1]
    weekday_days = Counter(date(first.year, first.month, day).weekday() for day in range(1, days_in_month + 1))
    weekday_trips: Counter[int] = Counter()
    for day, count in per_date.items():
        weekday_trips[day.weekday()] += count
    return SampleProfile(
        pickup_counts=tuple(pickups[zone] for zone in range(1, MAX_ZONE_ID + 1)),
        dropoff_counts=tuple(dropoffs[zone] for zone in range(1, MAX_ZONE_ID + 1)),
        hour_counts=tuple(hours[hour] for hour in range(24)),
        weekday_rates=tuple(weekday_trips[weekday] / weekday_days[weekday] for weekday in range(7)),
    )


def tariff_for(year: int, month: int) -> Tariff:
    """The rates in force in a month."""
    period = year * 100 + month
    return max((t for t in TARIFFS if t.start <= period), key=lambda t: t.start, default=TARIFFS[0])


def alias_table(weights: list[float]) -> tuple[list[float], list[int]]:
    """Walker/Vose alias table: pick slot i uniformly, keep it with probs[i], else take aliases[i]."""
    n = len(weights)
    total = sum(weights)
    scaled = [w * n / total for w in weights]
    probs, aliases = [1.0] * n, list(range(n))
    small = [i for i, s in enumerate(scaled) if s < 1.0]
    large = [i for i, s in enumerate(scaled) if s >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        probs[lo], aliases[lo] = scaled[lo], hi
        scaled[hi] -= 1.0 - scaled[lo]
        (small if scaled[hi] < 1.0 else large).append(hi)
    return probs, aliases


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


def _mapped_zones() -> list[Zone]:
    """Zones 1-263, the ones with a centroid, in LocationID order."""
    return [zone for zone in load_zones() if zone.location_id <= MAX_ZONE_ID]


def miles_matrix() -> np.ndarray:
    """Typical straight-line miles between zones (row: pickup, column: dropoff), as zone_miles in numpy."""
    zones = _mapped_zones()
    lat = np.radians([zone.centroid_lat or 0.0 for zone in zones])
    lon = np.radians([zone.centroid_lon or 0.0 for zone in zones])
    area = np.array([zone.area_sq_miles or 0.0 for zone in zones])
    a = (
        np.sin((lat[None, :] - lat[:, None]) / 2) ** 2
        + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin((lon[None, :] - lon[:, None]) / 2) ** 2
    )
    centroid = 2 * EARTH_RADIUS_MILES * np.arcsin(np.sqrt(np.minimum(1.0, a)))
    spread = ZONE_SPREAD * (area[:, None] + area[None, :]) / math.pi
    return np.asarray(np.sqrt(centroid**2 + spread))


def zone_miles(lat1: Column, lon1: Column, area1: Column, lat2: Column, lon2: Column, area2: Column) -> Column:
    """Typical straight-line miles between points of two zones: centroid haversine widened by zone size."""
    phi1, phi2 = F.radians(lat1), F.radians(lat2)
    a = F.pow(F.sin((phi2 - phi1) / 2), 2) + F.cos(phi1) * F.cos(phi2) * F.pow(F.sin(F.radians(lon2 - lon1) / 2), 2)
    centroid = 2 * EARTH_RADIUS_MILES * F.asin(F.sqrt(F.least(F.lit(1.0), a)))
    return F.sqrt(centroid * centroid + ZONE_SPREAD * (area1 + area2) / math.pi)


def _gravity_power(zone: Zone, service: str) -> float:
    """How fast a pickup zone's destination choice falls off with distance."""
    return AIRPORT_GRAVITY_POWER if zone.location_id in AIRPORT_ZONE_IDS else GRAVITY[service].power


def gravity_kernel(miles: np.ndarray, service: str) -> np.ndarray:
    """Deterrence of a destination (column) from a pickup (row): as the weight in dropoff_bins, in numpy."""
    power = np.array([_gravity_power(zone, service) for zone in _mapped_zones()])
    kernel = (miles + GRAVITY_OFFSET_MILES) ** -power[:, None]
    kernel[np.diag_indices_from(kernel)] *= GRAVITY[service].same_zone
    return np.asarray(kernel)


@lru_cache(maxsize=2)
def dropoff_attraction(service: str) -> tuple[float, ...]:
    """Per-zone attraction of a doubly-constrained gravity model fitted so dropoff shares match the sample."""
    profile = sample_profile(service)
    pickup = np.array(profile.pickup_counts, dtype=float) + ZONE_PRIOR
    target = np.array(profile.dropoff_counts, dtype=float) + ZONE_PRIOR
    pickup, target = pickup / pickup.sum(), target / target.sum()
    kernel = gravity_kernel(miles_matrix(), service)
    attraction = target.copy()
    for _ in range(GRAVITY_FIT_ITERATIONS):  # iterative proportional fitting of the dropoff margin
        weights = kernel * attraction[None, :]
        dropoff = (pickup[:, None] * weights / weights.sum(axis=1, keepdims=True)).sum(axis=0)
        attraction *= target / dropoff
        attraction /= attraction.sum()
    return tuple(float(value) for value in attraction)


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
            _gravity_power(zone, service),
            slot,
            probs[slot],
            aliases[slot] + 1,
        )
        for slot, (zone, attraction) in enumerate(zip(_mapped_zones(), dropoff_attraction(service), strict=True))
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


def with_fares(trips: DataFrame, tariff: Tariff, service: str) -> DataFrame:
    """RatecodeID, payment type and the money columns from the meter formula of the tariff in force."""
    manhattan = BOROUGH_CODES["Manhattan"]
    pickup, dropoff = F.col("pickup"), F.col("dropoff")
    jfk = ((pickup == JFK_ZONE) & (F.col("dropoff_borough") == manhattan)) | (
        (dropoff == JFK_ZONE) & (F.col("pickup_borough") == manhattan)
    )
    newark = dropoff == NEWARK_ZONE
    slow_minutes = F.greatest(F.lit(0.0), F.col("natural_s") / 60.0 - F.col("miles") / SLOW_MPH * 60.0)
    meter = tariff.initial + tariff.unit * (F.ceil(F.col("miles") * 5) + F.floor(slow_minutes))
    fare = F.when(jfk, tariff.jfk_flat).when(newark, meter + tariff.newark_surcharge).otherwise(meter)
    overnight = (F.col("hour") >= OVERNIGHT_HOURS[0]) | (F.col("hour") < OVERNIGHT_HOURS[1])
    rush = (F.col("weekend") == 0) & (F.col("hour") >= RUSH_HOURS[0]) & (F.col("hour") < RUSH_HOURS[1])
    extra = F.when(jfk, 0.0).when(overnight, tariff.overnight).when(rush, tariff.rush).otherwise(0.0)
    u_tip = F.col("u_tip")
    tip_share = F.when(u_tip < NO_TIP_SHARE, 0.0).otherwise(
        TIP_MIN + TIP_SPAN * (u_tip - NO_TIP_SHARE) / (1 - NO_TIP_SHARE)
    )
    crosses = F.col("pickup_borough") != F.col("dropoff_borough")
    tolls = F.when(crosses & (F.col("u_toll") < TOLL_SHARE), tariff.toll).otherwise(0.0)
    touches_manhattan = (F.col("pickup_borough") == manhattan) | (F.col("dropoff_borough") == manhattan)
    congestion_rate = GREEN_CONGESTION if service == "green" else tariff.congestion
    no_value = F.lit(None).cast("double")
    congestion = (
        F.when(touches_manhattan, congestion_rate).otherwise(0.0) if tariff.congestion is not None else no_value
    )
    at_airport = pickup.isin(*(zone for zone in AIRPORT_ZONE_IDS if zone != NEWARK_ZONE))
    airport_fee = (
        F.when(at_airport, tariff.airport_fee).otherwise(0.0)
        if tariff.airport_fee is not None and service == "yellow"
        else no_value
    )
    money = trips.withColumns(
        {
            "RatecodeID": F.when(jfk, RATE_JFK).when(newark, RATE_NEWARK).otherwise(RATE_STANDARD),
            "fare_amount": F.round(fare, 2).cast("double"),
            "extra": extra.cast("double"),
            "mta_tax": F.lit(MTA_TAX),
            "tolls_amount": tolls.cast("double"),
            "improvement_surcharge": F.lit(tariff.improvement),
            "congestion_surcharge": congestion.cast("double"),
            "Airport_fee": airport_fee.cast("double"),
        }
    ).withColumn(
        "tip_amount",
        F.when(F.col("payment_type") == CARD, F.round(F.col("fare_amount") * tip_share, 2)).otherwise(0.0),
    )
    parts = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge")
    total = sum((F.col(name) for name in parts[1:]), F.col(parts[0]))
    total = total + F.coalesce(F.col("congestion_surcharge"), F.lit(0.0)) + F.coalesce(F.col("Airport_fee"), F.lit(0.0))
    return money.withColumn("total_amount", F.round(total, 2))
