"""Known trip file formats, recognised from their column names (case-insensitive)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from taxi_duration.errors import UnknownFormatError


@dataclass(frozen=True)
class TripFormat:
    """How one kind of source file maps onto the canonical trip columns."""

    name: str
    service: str
    required: frozenset[str]  # lower-case column names that identify the format
    forbidden: frozenset[str] = frozenset()  # columns whose presence rules the format out
    # canonical column -> candidate source columns (lower-case), first present wins
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    service_column: str | None = None  # a column holding the service per row (e.g. `color` in mixed files)

    def source_column(self, canonical: str, present: Iterable[str]) -> str | None:
        """The source column (original spelling) feeding a canonical column, if the file has one."""
        by_lower = {name.lower(): name for name in present}
        for candidate in self.columns.get(canonical, ()):
            if candidate in by_lower:
                return by_lower[candidate]
        return None


_COMMON = {
    "vendor_id": ("vendorid", "vendor_id"),
    "passenger_count": ("passenger_count",),
    "trip_distance": ("trip_distance", "trip_miles"),
    "fare_amount": ("fare_amount", "base_passenger_fare"),
    "tip_amount": ("tip_amount", "tips"),
    "total_amount": ("total_amount",),
    "pickup_location_id": ("pulocationid",),
    "dropoff_location_id": ("dolocationid",),
    "pickup_latitude": ("pickup_latitude",),
    "pickup_longitude": ("pickup_longitude",),
    "dropoff_latitude": ("dropoff_latitude",),
    "dropoff_longitude": ("dropoff_longitude",),
}

YELLOW = TripFormat(
    name="yellow",
    service="yellow",
    required=frozenset({"tpep_pickup_datetime", "tpep_dropoff_datetime"}),
    columns={
        **_COMMON,
        "pickup_datetime": ("tpep_pickup_datetime",),
        "dropoff_datetime": ("tpep_dropoff_datetime",),
    },
    # mixed yellow/green extracts (e.g. seaborn's taxis.csv) say which service each row is
    service_column="color",
)
GREEN = TripFormat(
    name="green",
    service="green",
    required=frozenset({"lpep_pickup_datetime", "lpep_dropoff_datetime"}),
    columns={
        **_COMMON,
        "pickup_datetime": ("lpep_pickup_datetime",),
        "dropoff_datetime": ("lpep_dropoff_datetime",),
    },
)
HVFHV = TripFormat(
    name="hvfhv",
    service="hvfhv",
    required=frozenset({"hvfhs_license_num", "pickup_datetime", "dropoff_datetime", "pulocationid"}),
    columns={
        **_COMMON,
        "pickup_datetime": ("pickup_datetime",),
        "dropoff_datetime": ("dropoff_datetime",),
    },
)
FHV = TripFormat(
    name="fhv",
    service="fhv",
    required=frozenset({"dispatching_base_num", "pickup_datetime", "pulocationid"}),
    forbidden=frozenset({"hvfhs_license_num"}),
    columns={
        **_COMMON,
        "vendor_id": (),
        "pickup_datetime": ("pickup_datetime",),
        "dropoff_datetime": ("dropoff_datetime",),  # `dropOff_datetime` in 2019+ files; matching is lower-case
    },
)
KAGGLE_TRAIN = TripFormat(
    name="kaggle_train",
    service="kaggle",
    required=frozenset({"id", "pickup_datetime", "dropoff_datetime", "pickup_longitude", "trip_duration"}),
    columns={
        **_COMMON,
        "pickup_datetime": ("pickup_datetime",),
        "dropoff_datetime": ("dropoff_datetime",),
    },
)
KAGGLE_TEST = TripFormat(
    name="kaggle_test",
    service="kaggle",
    required=frozenset({"id", "pickup_datetime", "pickup_longitude", "dropoff_longitude"}),
    forbidden=frozenset({"dropoff_datetime", "trip_duration"}),
    columns={**_COMMON, "pickup_datetime": ("pickup_datetime",), "dropoff_datetime": ()},
)

# Most specific first: HVFHV files also carry the FHV columns.
FORMATS: tuple[TripFormat, ...] = (YELLOW, GREEN, HVFHV, FHV, KAGGLE_TRAIN, KAGGLE_TEST)
FORMAT_NAMES = ", ".join(fmt.name for fmt in FORMATS)


def detect_format(columns: Iterable[str], path: str) -> TripFormat:
    """The format whose identifying columns are all present, or a one-line error naming what was found."""
    found = list(columns)
    lower = {name.lower() for name in found}
    for fmt in FORMATS:
        if fmt.required <= lower and not (fmt.forbidden & lower):
            return fmt
    shown = ", ".join(found[:25]) + (", ..." if len(found) > 25 else "")
    raise UnknownFormatError(
        f"{path}: columns match no known trip format; found [{shown}]; known formats: {FORMAT_NAMES}"
    )
