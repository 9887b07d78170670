"""Format detection from column names, one case per known format, and the unknown-format error."""

import pytest

from taxi_duration.errors import UnknownFormatError
from taxi_duration.ingest.formats import detect_format

YELLOW_2024 = [
    "VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance",
    "RatecodeID", "store_and_fwd_flag", "PULocationID", "DOLocationID", "payment_type", "fare_amount",
    "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount",
    "congestion_surcharge", "Airport_fee",
]  # fmt: skip
GREEN = [
    "VendorID", "lpep_pickup_datetime", "lpep_dropoff_datetime", "store_and_fwd_flag", "RatecodeID",
    "PULocationID", "DOLocationID", "passenger_count", "trip_distance", "fare_amount", "extra", "mta_tax",
    "tip_amount", "tolls_amount", "ehail_fee", "improvement_surcharge", "total_amount", "payment_type",
    "trip_type", "congestion_surcharge",
]  # fmt: skip
FHV_2019 = [
    "dispatching_base_num",
    "pickup_datetime",
    "dropOff_datetime",
    "PUlocationID",
    "DOlocationID",
    "SR_Flag",
]
HVFHV = [
    "hvfhs_license_num", "dispatching_base_num", "originating_base_num", "request_datetime", "on_scene_datetime",
    "pickup_datetime", "dropoff_datetime", "PULocationID", "DOLocationID", "trip_miles", "trip_time",
    "base_passenger_fare", "tolls", "bcf", "sales_tax", "congestion_surcharge", "airport_fee", "tips",
    "driver_pay",
]  # fmt: skip
KAGGLE_TRAIN = [
    "id", "vendor_id", "pickup_datetime", "dropoff_datetime", "passenger_count", "pickup_longitude",
    "pickup_latitude", "dropoff_longitude", "dropoff_latitude", "store_and_fwd_flag", "trip_duration",
]  # fmt: skip
KAGGLE_TEST = [c for c in KAGGLE_TRAIN if c not in ("dropoff_datetime", "trip_duration")]


@pytest.mark.parametrize(
    ("columns", "name", "service"),
    [
        (YELLOW_2024, "yellow", "yellow"),
        ([*YELLOW_2024[:-1], "airport_fee"], "yellow", "yellow"),
        ([*YELLOW_2024[:-1], "color", "ehail_fee", "trip_type"], "yellow", "yellow"),
        (GREEN, "green", "green"),
        (FHV_2019, "fhv", "fhv"),
        (HVFHV, "hvfhv", "hvfhv"),
        (KAGGLE_TRAIN, "kaggle_train", "kaggle"),
        (KAGGLE_TEST, "kaggle_test", "kaggle"),
    ],
)
def test_detects_each_known_format(columns: list[str], name: str, service: str) -> None:
    fmt = detect_format(columns, "file.csv")
    assert (fmt.name, fmt.service) == (name, service)


def test_source_columns_match_case_insensitively() -> None:
    fmt = detect_format(FHV_2019, "fhv.parquet")
    assert fmt.source_column("dropoff_datetime", FHV_2019) == "dropOff_datetime"
    assert fmt.source_column("pickup_location_id", FHV_2019) == "PUlocationID"
    assert fmt.source_column("trip_distance", FHV_2019) is None
    hv = detect_format(HVFHV, "hv.parquet")
    assert hv.source_column("trip_distance", HVFHV) == "trip_miles"
    assert hv.source_column("fare_amount", HVFHV) == "base_passenger_fare"


def test_unknown_columns_name_the_file_the_columns_and_the_formats() -> None:
    with pytest.raises(UnknownFormatError) as caught:
        detect_format(["city", "temperature"], "/data/weather.csv")
    message = str(caught.value)
    assert message == (
        "/data/weather.csv: columns match no known trip format; found [city, temperature]; "
        "known formats: yellow, green, hvfhv, fhv, kaggle_train, kaggle_test"
    )
    assert "\n" not in message
