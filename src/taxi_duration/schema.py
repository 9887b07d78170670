"""The canonical trip schema: every reader ends in it, every later stage starts from it."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from taxi_duration.columns import SERVICES, TRIP_COLUMNS, TRIP_FIELDS

_TYPES = {
    "bigint": LongType(),
    "int": IntegerType(),
    "double": DoubleType(),
    "string": StringType(),
    "timestamp": TimestampType(),
}


def struct_type(fields: Iterable[tuple[str, str, bool]]) -> StructType:
    """(name, Spark SQL type name, nullable) triples, as `columns.TRIP_FIELDS` spells them -> a `StructType`."""
    return StructType([StructField(name, _TYPES[kind], nullable) for name, kind, nullable in fields])


# Columns of a canonical trip, in order (names and types from `columns.TRIP_FIELDS`, which serving reads).
TRIP_SCHEMA = struct_type(TRIP_FIELDS)

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

__all__ = [
    "PARTITION_COLUMNS",
    "QUARANTINE_SCHEMA",
    "SERVICES",
    "TRIPS_TABLE_SCHEMA",
    "TRIP_COLUMNS",
    "TRIP_SCHEMA",
    "struct_type",
]
