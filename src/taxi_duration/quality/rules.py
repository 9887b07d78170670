"""Quality rules: the first rule a row breaks becomes its quarantine reason; nothing is dropped."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from taxi_duration.columns import EXPECTS_DROPOFF, FORMAT, IS_CORRUPT, NUMBER_PROBLEMS, RAW, SOURCE, TIMESTAMP_PROBLEMS
from taxi_duration.params import QualityParams
from taxi_duration.schema import TRIP_COLUMNS
from taxi_duration.zones import MAX_ZONE_ID

REASON = "reason"
DETAIL = "reason_detail"

# Reason codes in the order they are checked, with what each means (shown in the quality report).
REASONS: dict[str, str] = {
    "malformed_row": "CSV line with the wrong number of fields",
    "unparseable_timestamp": "a pickup/dropoff time that is not a timestamp",
    "unparseable_number": "a numeric field that is not a number (or does not fit its type)",
    "duplicate_row": "an exact copy of an earlier row of the same file",
    "missing_pickup_time": "no pickup time",
    "missing_dropoff_time": "no dropoff time (in a format that has one)",
    "timestamp_out_of_range": "pickup year outside the configured range",
    "dropoff_before_pickup": "dropoff earlier than pickup",
    "duration_too_short": "trip shorter than quality.min_duration_s (0-second trips)",
    "duration_too_long": "trip longer than quality.max_duration_s (meter left running)",
    "no_location": "neither zone ids nor coordinates",
    "unknown_zone": "zone 264/265 (Unknown / outside NYC) or an id outside 1-263",
    "coordinates_outside_nyc": "pickup or dropoff coordinates outside the NYC bounding box",
    "zero_distance": "recorded trip distance of zero or less",
    "distance_too_long": "recorded trip distance above quality.max_distance_miles",
    "implausible_speed": "recorded distance over duration above quality.max_speed_mph",
    "bad_passenger_count": "passenger count below 0 or above quality.max_passenger_count",
}


def _said(prefix: str, value: Column) -> Column:
    return F.concat(F.lit(prefix), value.cast("string"))


def _zone_ok(column: Column) -> Column:
    return column.between(1, MAX_ZONE_ID)


def _in_box(lat: Column, lon: Column, box: tuple[float, float, float, float]) -> Column:
    lat_min, lon_min, lat_max, lon_max = box
    return lat.between(lat_min, lat_max) & lon.between(lon_min, lon_max)


def quality_checks(params: QualityParams) -> list[tuple[str, Column, Column]]:
    """(reason, broken-when condition, detail) for each rule, in priority order."""
    pickup, dropoff = F.col("pickup_datetime"), F.col("dropoff_datetime")
    duration, distance = F.col("duration_s"), F.col("trip_distance")
    pu_zone, do_zone = F.col("pickup_location_id"), F.col("dropoff_location_id")
    coords = ["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"]
    has_zones = pu_zone.isNotNull() & do_zone.isNotNull()
    has_coords = F.col(coords[0]).isNotNull()
    for name in coords[1:]:
        has_coords = has_coords & F.col(name).isNotNull()
    timestamp_problems, number_problems = F.col(TIMESTAMP_PROBLEMS), F.col(NUMBER_PROBLEMS)
    speed_mph = distance / (duration / F.lit(3600.0))
    pickup_year = F.year(pickup)
    return [
        ("malformed_row", F.col(IS_CORRUPT), F.lit("wrong number of fields")),
        ("unparseable_timestamp", F.length(timestamp_problems) > 0, timestamp_problems),
        ("unparseable_number", F.length(number_problems) > 0, number_problems),
        ("duplicate_row", F.col("_is_duplicate"), _said("trip_id ", F.col("trip_id"))),
        ("missing_pickup_time", pickup.isNull(), F.lit("pickup_datetime")),
        ("missing_dropoff_time", F.col(EXPECTS_DROPOFF) & dropoff.isNull(), F.lit("dropoff_datetime")),
        (
            "timestamp_out_of_range",
            ~pickup_year.between(params.min_year, params.max_year),
            _said("pickup year ", pickup_year),
        ),
        ("dropoff_before_pickup", duration < 0, _said("duration_s ", duration)),
        ("duration_too_short", duration < params.min_duration_s, _said("duration_s ", duration)),
        ("duration_too_long", duration > params.max_duration_s, _said("duration_s ", duration)),
        ("no_location", ~has_zones & ~has_coords, F.lit("no zone ids or coordinates")),
        (
            "unknown_zone",
            has_zones & ~(_zone_ok(pu_zone) & _zone_ok(do_zone)),
            F.concat_ws("->", pu_zone.cast("string"), do_zone.cast("string")),
        ),
        (
            "coordinates_outside_nyc",
            ~has_zones
            & ~(
                _in_box(F.col(coords[0]), F.col(coords[1]), params.nyc_bbox)
                & _in_box(F.col(coords[2]), F.col(coords[3]), params.nyc_bbox)
            ),
            F.concat_ws(",", *[F.col(c).cast("string") for c in coords]),
        ),
        ("zero_distance", distance <= 0, _said("trip_distance ", distance)),
        (
            "distance_too_long",
            distance > params.max_distance_miles,
            _said("trip_distance ", distance),
        ),
        (
            "implausible_speed",
            (duration > 0) & (speed_mph > params.max_speed_mph),
            F.concat(F.format_number(speed_mph, 1), F.lit(" mph")),
        ),
        (
            "bad_passenger_count",
            ~F.col("passenger_count").between(0, params.max_passenger_count),
            _said("passenger_count ", F.col("passenger_count")),
        ),
    ]


_ROW = "_row_number"
_FIRST = "_first_row"


def with_row_number(df: DataFrame) -> DataFrame:
    """Number the rows of one file's frame in read order (`_row_number`): a file is split and read the same way by
    every job of a session, so the numbers are the same whichever job computes them."""
    return df.withColumn(_ROW, F.monotonically_increasing_id())


def repeated_ids(numbered: DataFrame) -> DataFrame:
    """The ids occurring more than once in a numbered frame, each with the number of its first row.

    Only the ids are shuffled, not the rows: the repeated ones are a tiny share of a TLC file (16 bytes each)."""
    return (
        numbered.groupBy("trip_id")
        .agg(F.min(_ROW).alias(_FIRST), F.count(F.lit(1)).alias("_copies"))
        .filter(F.col("_copies") > 1)
        .select("trip_id", _FIRST)
    )


def with_duplicate_flag(df: DataFrame, repeated: DataFrame | None = None) -> DataFrame:
    """Mark every copy of an exact duplicate row but one (`_is_duplicate`).

    `repeated` is `repeated_ids` of the same numbered frame, computed once and shared when several jobs classify
    the same file (ingest writes two tables); without it, `df` is numbered and its ids counted here, in the same
    job (a streaming micro-batch). The repeated ids are broadcast back to the rows: one narrow aggregation instead
    of a window or a sort-merge join over every row.
    """
    numbered = df if repeated is not None else with_row_number(df)
    found = repeated if repeated is not None else repeated_ids(numbered)
    return (
        numbered.join(F.broadcast(found), on="trip_id", how="left")
        .withColumn("_is_duplicate", F.coalesce(F.col(_FIRST) != F.col(_ROW), F.lit(False)))
        .drop(_ROW, _FIRST)
    )


def with_quality_reason(params: QualityParams) -> Callable[[DataFrame], DataFrame]:
    """Add `reason` / `reason_detail`: the first broken rule, or null for a clean trip."""
    # The columns are built once here, not per frame: a stream applies the step to every micro-batch.
    reason: Column = F.lit(None).cast("string")
    detail: Column = F.lit(None).cast("string")
    # built back to front so the first rule in the list wins; a null condition means "not broken"
    for code, broken, why in reversed(quality_checks(params)):
        hit = F.coalesce(broken, F.lit(False))
        reason = F.when(hit, F.lit(code)).otherwise(reason)
        detail = F.when(hit, why).otherwise(detail)

    def step(df: DataFrame) -> DataFrame:
        return df.withColumns({REASON: reason, DETAIL: detail})

    return step


def with_raw_json(df: DataFrame) -> DataFrame:
    """The raw source row as JSON, for quarantined rows only (clean rows keep their canonical values)."""
    raw_json = F.to_json(F.col(RAW), {"ignoreNullFields": "false"})
    return df.withColumn(RAW, F.when(F.col(REASON).isNotNull(), raw_json))


def to_trips(df: DataFrame) -> DataFrame:
    """Clean rows in the trips table layout (canonical columns, then partition columns)."""
    return df.filter(F.col(REASON).isNull()).select(
        *TRIP_COLUMNS,
        F.year("pickup_datetime").alias("year"),
        F.month("pickup_datetime").alias("month"),
        F.col(SOURCE),
    )


def to_quarantine(df: DataFrame) -> DataFrame:
    """Rejected rows with their reason and the raw values exactly as read (JSON)."""
    return df.filter(F.col(REASON).isNotNull()).select(
        "trip_id",
        F.col(REASON),
        F.col(DETAIL),
        F.col(RAW).alias("raw"),
        F.col(FORMAT),
        "source_file",
        "service",
        F.col(SOURCE),
    )


def classify(params: QualityParams, repeated: DataFrame | None = None) -> Callable[[DataFrame], DataFrame]:
    """Canonical frame (from `to_canonical`) -> the same rows with `reason` and `reason_detail`.

    With `repeated` (`repeated_ids` of the frame after `with_row_number`), the frame must be that numbered frame and
    the duplicate check reuses the ids instead of counting them again."""
    with_reason = with_quality_reason(params)

    def step(df: DataFrame) -> DataFrame:
        flagged = with_duplicate_flag(df, repeated)
        return flagged.transform(with_reason).transform(with_raw_json)

    return step
