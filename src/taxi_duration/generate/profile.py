"""The generator's zone and time model, fitted to the real sample (pure Python and NumPy, no Spark).

Rows per month; zone, hour and weekday counts of the packaged 2019-03 sample; the destination choice, a
doubly-constrained gravity model: P(dropoff | pickup) ~ attraction(dropoff) * (miles + OFFSET) ** -power, times a
same-zone weight, with attractions fitted so that dropoff shares match the sample (airport pickups care little
about distance); and the alias tables the Spark generator samples with (synthetic.py, lookups.py).
"""

from __future__ import annotations

import calendar
import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from importlib import resources

import numpy as np

from taxi_duration.errors import ConfigError
from taxi_duration.zones import AIRPORT_ZONE_IDS, MAX_ZONE_ID, Zone, load_zones

# The real sample the profiles (zone popularity, hour of day, day of week) are derived from.
SAMPLE_FILE = "taxis_sample_2019-03.csv"
ZONE_PRIOR = 0.25  # pseudo-trips per zone, so every one of the 263 zones can appear
HOUR_PRIOR = 1.0  # pseudo-trips per hour of day

GRAVITY_OFFSET_MILES = 0.5
AIRPORT_GRAVITY_POWER = 0.4
GRAVITY_FIT_ITERATIONS = 50

# Distance: centroid haversine widened by the zones' own size (pickup points are spread over the zone).
EARTH_RADIUS_MILES = 3958.8
ZONE_SPREAD = 0.75  # share of the zones' (area / pi) added in quadrature to the centroid distance

YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Gravity:
    """Destination choice of a service: distance decay and the weight of staying in the pickup zone."""

    power: float
    same_zone: float


# Green trips start in the (larger) outer-borough zones and stay closer to their pickup.
GRAVITY = {"yellow": Gravity(power=2.0, same_zone=0.45), "green": Gravity(power=2.75, same_zone=1.0)}


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


def mapped_zones() -> list[Zone]:
    """Zones 1-263, the ones with a centroid, in LocationID order."""
    return [zone for zone in load_zones() if zone.location_id <= MAX_ZONE_ID]


def miles_matrix() -> np.ndarray:
    """Typical straight-line miles between zones (row: pickup, column: dropoff), as zone_miles in numpy."""
    zones = mapped_zones()
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


def gravity_power(zone: Zone, service: str) -> float:
    """How fast a pickup zone's destination choice falls off with distance."""
    return AIRPORT_GRAVITY_POWER if zone.location_id in AIRPORT_ZONE_IDS else GRAVITY[service].power


def gravity_kernel(miles: np.ndarray, service: str) -> np.ndarray:
    """Deterrence of a destination (column) from a pickup (row): as the weight in dropoff_bins, in numpy."""
    power = np.array([gravity_power(zone, service) for zone in mapped_zones()])
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
