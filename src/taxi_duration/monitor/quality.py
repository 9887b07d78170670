"""Data quality drift: the share of input rows quarantined per reason, current period against the reference.

Quarantined rows have no trustworthy pickup time (many are quarantined because of it), so a row is dated by its
input file: a source belongs to a period when the median pickup of its clean trips falls inside it. TLC files are
monthly, so this is the file's month."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.monitor.drift import CURRENT, PERIOD, REFERENCE

MEDIAN_ACCURACY = 1000


def _in_window(column: str, window: tuple[datetime, datetime]) -> F.Column:
    start, end = window
    return (F.col(column) >= timestamp_literal(start)) & (F.col(column) < timestamp_literal(end))


def timestamp_literal(value: datetime) -> F.Column:
    """A wall-clock timestamp in the session time zone (as the trips table stores pickups)."""
    return F.lit(value.strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp")


def source_periods(trips: DataFrame, current: tuple[datetime, datetime], reference: tuple[datetime, datetime]):
    """(source, period) for every source whose median clean pickup lies in the current or reference window."""
    medians = trips.groupBy("source").agg(
        F.percentile_approx(F.unix_micros("pickup_datetime"), 0.5, MEDIAN_ACCURACY).alias("_median_micros")
    )
    dated = medians.select("source", F.timestamp_micros("_median_micros").alias("_median"))
    period = F.when(_in_window("_median", current), F.lit(CURRENT)).when(
        _in_window("_median", reference), F.lit(REFERENCE)
    )
    return dated.select("source", period.alias(PERIOD)).filter(F.col(PERIOD).isNotNull())


def quarantine_shares(trips: DataFrame, quarantine: DataFrame, periods: DataFrame) -> DataFrame:
    """(period, reason, rows, input_rows, share): quarantined rows per reason over all input rows of the period's
    sources (clean + quarantined). Reason `all` is the total."""
    clean = trips.groupBy("source").agg(F.count(F.lit(1)).alias("_clean"))
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
