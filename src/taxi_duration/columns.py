"""The canonical trip columns as plain names and type names, without pyspark.

`schema.py` builds the Spark `StructType`s from these; the serving path (which must not import pyspark) reads them
here. Type names are Spark SQL's simple strings.
"""

from __future__ import annotations

SERVICES = ("yellow", "green", "fhv", "hvfhv", "kaggle")

# (name, Spark SQL type, nullable) of a canonical trip, in order. Timestamps are New York wall-clock.
TRIP_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("trip_id", "bigint", False),  # xxhash64 of source file and raw row: stable across re-ingests
    ("service", "string", False),
    ("vendor_id", "int", True),
    ("pickup_datetime", "timestamp", True),
    ("dropoff_datetime", "timestamp", True),
    ("pickup_location_id", "int", True),
    ("dropoff_location_id", "int", True),
    ("pickup_latitude", "double", True),
    ("pickup_longitude", "double", True),
    ("dropoff_latitude", "double", True),
    ("dropoff_longitude", "double", True),
    ("passenger_count", "int", True),
    ("trip_distance", "double", True),  # miles, as recorded by the meter
    ("fare_amount", "double", True),
    ("tip_amount", "double", True),
    ("total_amount", "double", True),
    ("duration_s", "double", True),  # dropoff - pickup; null where unknown (Kaggle test)
    ("source_file", "string", False),
)

TRIP_COLUMNS = [name for name, _, _ in TRIP_FIELDS]


# Working columns ingest adds while it reads and normalises, which the quality rules read (dropped before writing)
# canonical field names whose raw value could not be parsed, comma-joined ("" for none): timestamps, numbers.
# Strings, not an array filtered with a lambda: a higher-order function has no generated code and turns
# whole-stage code generation off for the whole stage (docs/benchmarks.md, "Where the time goes").
TIMESTAMP_PROBLEMS = "_timestamp_problems"
NUMBER_PROBLEMS = "_number_problems"
IS_CORRUPT = "_is_corrupt"  # CSV line with the wrong number of fields
EXPECTS_DROPOFF = "_expects_dropoff"  # false for formats without a dropoff time (Kaggle test)
RAW = "_raw"  # the source row as read, as a struct
FORMAT = "format"
SOURCE = "source"

# The Spark model's output column: ln(duration in seconds), the inverse of the label
PREDICTION = "prediction"
