"""Data quality drift: the share of input rows quarantined per reason, current period against the reference.

Quarantined rows have no trustworthy pickup time (many are quarantined because of it), so a row is dated by its
input file: a source belongs to a period when the day of the median pickup of its clean trips falls inside it.
TLC files are monthly, so this is the file's month."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from taxi_duration.monitor.drift import CURRENT, PERIOD, REFERENCE

MEDIAN_DAY = "median_day"
DAY, TRIPS = "day", "trips"


def in_window(column: str, window: tuple[datetime, datetime]) -> F.Column:
    """`column` in the half-open window [start, end) of wall-clock timestamps."""
    start, end = window
    return (F.col(column) >= timestamp_literal(start)) & (F.col(column) < timestamp_literal(end))


def timestamp_literal(value: datetime) -> F.Column:
    """A wall-clock timestamp in the session time zone (as the trips table stores pickups)."""
    return F.lit(value.strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp")


def source_day_counts(trips: DataFrame) -> DataFrame:
    """(source, day, trips): clean trips per source and pickup day, the small table both passes below read (it
    replaces a `percentile_approx` per source and a count per source, two scans of every trip)."""
    return trips.groupBy("source", F.to_date("pickup_datetime").alias(DAY)).agg(F.count(F.lit(1)).alias(TRIPS))


def source_median_days(day_counts: DataFrame) -> DataFrame:
    """(source, median_day): the day of each source's median pickup (the lower median), as a timestamp at its
    midnight: exact at a day's resolution."""
    upto = Window.partitionBy("source").orderBy(DAY).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    running = day_counts.select(
        "source",
        DAY,
        F.sum(TRIPS).over(upto).alias("_upto"),
        F.sum(TRIPS).over(Window.partitionBy("source")).alias("_total"),
    )
    # the first day by which half of the source's trips have been picked up
    return (
        running.filter(F.col("_upto") * 2 >= F.col("_total"))
        .groupBy("source")
        .agg(F.min(DAY).cast("timestamp").alias(MEDIAN_DAY))
    )


def source_periods(
    day_counts: DataFrame, current: tuple[datetime, datetime], reference: tuple[datetime, datetime]
) -> DataFrame:
    """(source, period) for every source whose median pickup's day lies in the current or reference window."""
    period = F.when(in_window(MEDIAN_DAY, current), F.lit(CURRENT)).when(
        in_window(MEDIAN_DAY, reference), F.lit(REFERENCE)
    )
    dated = source_median_days(day_counts)
    return dated.select("source", period.alias(PERIOD)).filter(F.col(PERIOD).isNotNull())


def quarantine_shares(day_counts: DataFrame, quarantine: DataFrame, periods: DataFrame) -> DataFrame:
    """(period, reason, rows, input_rows, share): quarantined rows per reason over all input rows of the period's
    sources (clean trips from `source_day_counts` + quarantined). Reason `all` is the total."""
    clean = day_counts.groupBy("source").agg(F.sum(TRIPS).alias("_clean"))
    quarantined = quarantine.groupBy("source", "reason").agg(F.count(F.lit(1)).alias("rows"))
    per_source_total = quarantined.groupBy("source").agg(F.sum("rows").alias("_quarantined"))
    inputs = (
        periods.join(clean, on="source", how="left")
        .join(per_source_total, on="source", how="left")
        .groupBy(PERIOD)
        .agg((F.coalesce(F.sum("_clean"), F.lit(0)) + F.coalesce(F.sum("_quarantined"), F.lit(0))).alias("input_rows"))
    )
    by_reason = (
        periods.join(quarantined, on="source", how="inner").groupBy(PERIOD, "reason").agg(F.sum("rows").alias("rows"))
    )
    total = by_reason.groupBy(PERIOD).agg(F.lit("all").alias("reason"), F.sum("rows").alias("rows"))
    return (
        by_reason.unionByName(total)
        .join(inputs, on=PERIOD, how="inner")
        .withColumn("share", F.col("rows") / F.col("input_rows"))
        .select(PERIOD, "reason", F.col("rows").cast("long"), F.col("input_rows").cast("long"), "share")
    )
