"""Map a raw source frame onto the canonical trip columns, remembering what could not be parsed."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, NumericType, StringType, TimestampNTZType, TimestampType

from taxi_duration.columns import (
    EXPECTS_DROPOFF,
    FORMAT,
    IS_CORRUPT,
    NUMBER_PROBLEMS,
    RAW,
    SOURCE,
    TIMESTAMP_PROBLEMS,
)
from taxi_duration.ingest.formats import TripFormat
from taxi_duration.ingest.readers import CORRUPT_RECORD, Source
from taxi_duration.schema import TRIP_SCHEMA

# Timestamp spellings seen in TLC and Kaggle CSVs (Socrata exports use the US form).
TIMESTAMP_FORMATS = (
    "yyyy-MM-dd HH:mm:ss",
    "yyyy-MM-dd HH:mm:ss.SSS",
    "yyyy-MM-dd'T'HH:mm:ss",
    "yyyy-MM-dd HH:mm",
    "MM/dd/yyyy hh:mm:ss a",
    "MM/dd/yyyy HH:mm:ss",
    "MM/dd/yyyy HH:mm",
)

# Columns the normaliser adds for the quality stage; dropped before anything is written.

_CANONICAL_TYPES = {field.name: field.dataType for field in TRIP_SCHEMA.fields}
_PARSED_FIELDS = [
    name for name in TRIP_SCHEMA.fieldNames() if name not in {"trip_id", "service", "duration_s", "source_file"}
]


def _quoted(name: str) -> Column:
    return F.col(f"`{name}`")


def parse_timestamp(column: Column) -> Column:
    """A string in any known TLC spelling -> timestamp; unparseable -> null (never an error)."""
    return F.coalesce(*[F.try_to_timestamp(column, F.lit(fmt)) for fmt in TIMESTAMP_FORMATS])


def parse_as(column: Column, source_type: DataType, target: DataType) -> Column:
    """Parse or cast a source value to a canonical type; values that do not fit become null."""
    if isinstance(target, TimestampType):
        if isinstance(source_type, StringType):
            return parse_timestamp(F.trim(column))
        if isinstance(source_type, TimestampType | TimestampNTZType):
            return column.cast(TimestampType())
        return F.lit(None).cast(TimestampType())
    if isinstance(source_type, StringType):
        # "1.0" in passenger_count (CSV exports of Parquet) must still be 1: go through double
        as_double = F.trim(column).try_cast("double")
        return as_double.try_cast(target) if target.typeName() != "double" else as_double
    if isinstance(source_type, NumericType):
        return column.try_cast(target)
    return F.lit(None).cast(target)


def to_canonical(fmt: TripFormat, source: Source) -> Callable[[DataFrame], DataFrame]:
    """Raw frame -> canonical columns plus the bookkeeping columns the quality rules read."""
    return to_canonical_from(fmt, F.lit(source.path), F.lit(source.source_id))


def to_canonical_from(
    fmt: TripFormat, path: Column, source_id: Column, bookkeeping: tuple[str, ...] = ()
) -> Callable[[DataFrame], DataFrame]:
    """`to_canonical` with the source file and its id as columns, for frames mixing files of one format
    (a streaming micro-batch). `bookkeeping` names raw columns that are not source data (never hashed or kept)."""

    built: dict[str, list[Column]] = {}  # raw schema -> the select list: reused for every frame of that schema

    def step(raw: DataFrame) -> DataFrame:
        key = raw.schema.json()
        if key not in built:
            built[key] = _canonical_columns(fmt, raw, path, source_id, bookkeeping)
        return raw.select(*built[key])

    return step


def _canonical_columns(
    fmt: TripFormat, raw: DataFrame, path: Column, source_id: Column, bookkeeping: tuple[str, ...]
) -> list[Column]:
    """The canonical select list for frames with `raw`'s schema (a few hundred Column calls to build)."""
    present = [name for name in raw.columns if name != CORRUPT_RECORD and name not in bookkeeping]
    types = {field.name: field.dataType for field in raw.schema.fields}
    parsed: dict[str, Column] = {}
    problems: dict[bool, list[Column]] = {True: [], False: []}  # is a timestamp -> problems
    for name in _PARSED_FIELDS:
        source_name = fmt.source_column(name, present)
        target = _CANONICAL_TYPES[name]
        if source_name is None:
            parsed[name] = F.lit(None).cast(target)
            continue
        value = parse_as(_quoted(source_name), types[source_name], target)
        parsed[name] = value
        is_timestamp = isinstance(target, TimestampType)
        problems[is_timestamp].append(F.when(_quoted(source_name).isNotNull() & value.isNull(), F.lit(name)))

    if fmt.service_column and fmt.service_column in {n.lower() for n in present}:
        by_lower = {n.lower(): n for n in present}
        row_service = F.lower(F.trim(_quoted(by_lower[fmt.service_column]).cast("string")))
        service = F.coalesce(row_service, F.lit(fmt.service))
    else:
        service = F.lit(fmt.service)

    raw_columns = [_quoted(name) for name in present]
    corrupt = _quoted(CORRUPT_RECORD) if CORRUPT_RECORD in raw.columns else F.lit(None).cast("string")
    duration = F.unix_micros(parsed["dropoff_datetime"]) - F.unix_micros(parsed["pickup_datetime"])
    # the corrupt line itself is part of the key so two different bad lines never look like duplicates
    trip_id = F.xxhash64(path, corrupt, *raw_columns)
    return [
        trip_id.alias("trip_id"),
        service.alias("service"),
        *[parsed[name].alias(name) for name in _PARSED_FIELDS],
        (duration / F.lit(1_000_000.0)).alias("duration_s"),
        path.alias("source_file"),
        F.concat_ws(",", *problems[True]).alias(TIMESTAMP_PROBLEMS),  # concat_ws skips the nulls
        F.concat_ws(",", *problems[False]).alias(NUMBER_PROBLEMS),
        corrupt.isNotNull().alias(IS_CORRUPT),
        F.lit(bool(fmt.columns.get("dropoff_datetime"))).alias(EXPECTS_DROPOFF),
        F.struct(*raw_columns, corrupt.alias(CORRUPT_RECORD)).alias(RAW),
        F.lit(fmt.name).alias(FORMAT),
        source_id.alias(SOURCE),
    ]
