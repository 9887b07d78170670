"""TLC taxi zones (lookup and centroids) shipped as package data, as Python rows and as DataFrames."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the online scorer imports this module and must not need pyspark
    from pyspark.sql import DataFrame, SparkSession

# Zones 264 ("Unknown", borough "Unknown") and 265 ("NA", borough "N/A" in 2019 files, "Outside of NYC")
# have no geometry: a trip there has no usable location.
UNKNOWN_ZONE_IDS = (264, 265)
MAX_ZONE_ID = 263
AIRPORT_ZONE_IDS = {1: "EWR", 132: "JFK", 138: "LGA"}
# Fixed codes (not a fitted StringIndexer) so batch, stream and online scoring agree without a lookup.
BOROUGH_CODES = {
    "Unknown": 0,
    "Manhattan": 1,
    "Brooklyn": 2,
    "Queens": 3,
    "Bronx": 4,
    "Staten Island": 5,
    "EWR": 6,
}

ZONES_DDL = (
    "location_id int NOT NULL, borough string NOT NULL, zone string NOT NULL, service_zone string NOT NULL, "
    "borough_code int NOT NULL, centroid_lat double, centroid_lon double, area_sq_miles double, "
    "is_airport int NOT NULL"
)


@dataclass(frozen=True)
class Zone:
    location_id: int
    borough: str
    zone: str
    service_zone: str
    borough_code: int
    centroid_lat: float | None
    centroid_lon: float | None
    area_sq_miles: float | None
    is_airport: int


def _read_package_csv(name: str) -> list[dict[str, str]]:
    text = resources.files("taxi_duration").joinpath("data", name).read_text(encoding="utf-8")
    # keep "NA" and "N/A" as the values they are in the TLC file
    return list(csv.DictReader(io.StringIO(text)))


@lru_cache(maxsize=1)
def load_zones() -> tuple[Zone, ...]:
    """All 265 TLC zones with borough code, centroid (None for 264/265) and airport flag."""
    centroids = {int(row["LocationID"]): row for row in _read_package_csv("taxi_zone_centroids.csv")}
    zones = []
    for row in _read_package_csv("taxi_zone_lookup.csv"):
        location_id = int(row["LocationID"])
        centroid = centroids.get(location_id)
        zones.append(
            Zone(
                location_id=location_id,
                borough=row["Borough"],
                zone=row["Zone"],
                service_zone=row["service_zone"],
                borough_code=BOROUGH_CODES.get(row["Borough"], 0),
                centroid_lat=float(centroid["centroid_lat"]) if centroid else None,
                centroid_lon=float(centroid["centroid_lon"]) if centroid else None,
                area_sq_miles=float(centroid["area_sq_miles"]) if centroid else None,
                is_airport=int(location_id in AIRPORT_ZONE_IDS),
            )
        )
    return tuple(zones)


def zones_frame(spark: SparkSession) -> DataFrame:
    """The zone table as a small DataFrame (built from driver-side rows: works on clusters and Connect)."""
    rows = [
        (
            z.location_id,
            z.borough,
            z.zone,
            z.service_zone,
            z.borough_code,
            z.centroid_lat,
            z.centroid_lon,
            z.area_sq_miles,
            z.is_airport,
        )
        for z in load_zones()
    ]
    return spark.createDataFrame(rows, schema=ZONES_DDL)


def package_data_path(name: str) -> str:
    """Filesystem path of a packaged data file (the real TLC samples, the zone tables)."""
    return str(resources.files("taxi_duration").joinpath("data", name))
