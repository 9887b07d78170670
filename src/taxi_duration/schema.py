"""The canonical trip schema: every reader ends in it, every later stage starts from it."""

from __future__ import annotations

from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

SERVICES = ("yellow", "green", "fhv", "hvfhv", "kaggle")

# Columns of a canonical trip, in order. Timestamps are New York wall-clock (session time zone).
TRIP_SCHEMA = StructType(
    [
        StructField("trip_id", LongType(), False),  # xxhash64 of source file and raw row: stable across re-ingests
        StructField("service", StringType(), False),
        StructField("vendor_id", IntegerType(), True),
        StructField("pickup_datetime", TimestampType(), True),
        StructField("dropoff_datetime", TimestampType(), True),
        StructField("pickup_location_id", IntegerType(), True),
        StructField("dropoff_location_id", IntegerType(), True),
        StructField("pickup_latitude", DoubleType(), True),
        StructField("pickup_longitude", DoubleType(), True),
        StructField("dropoff_latitude", DoubleType(), True),
        StructField("dropoff_longitude", DoubleType(), True),
        StructField("passenger_count", IntegerType(), True),
        StructField("trip_distance", DoubleType(), True),  # miles, as recorded by the meter
        StructField("fare_amount", DoubleType(), True),
        StructField("tip_amount", DoubleType(), True),
        StructField("total_amount", DoubleType(), True),
        StructField("duration_s", DoubleType(), True),  # dropoff - pickup; null where unknown (Kaggle test)
        StructField("source_file", StringType(), False),
    ]
)

# Partition columns of the `trips` table (after the canonical columns).
PARTITION_COLUMNS = ("service", "year", "month", "source")

TRIPS_TABLE_SCHEMA = StructType(
    [field for field in TRIP_SCHEMA.fields if field.name != "service"]
    + [
        StructField("service", StringType(), False),
        StructField("year", IntegerType(), True),
        StructField("month", IntegerType(), True),
        StructField("source", StringType(), False),
    ]
)

QUARANTINE_SCHEMA = StructType(
    [
        StructField("trip_id", LongType(), False),
        StructField("reason", StringType(), False),
        StructField("reason_detail", StringType(), True),
        StructField("raw", StringType(), True),  # the raw row as JSON, values exactly as read
        StructField("format", StringType(), False),
        StructField("source_file", StringType(), False),
        StructField("service", StringType(), False),
        StructField("source", StringType(), False),
    ]
)

TRIP_COLUMNS = [field.name for field in TRIP_SCHEMA.fields]
