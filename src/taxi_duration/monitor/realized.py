"""Realised error: the champion's predictions against the durations the trips actually took."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

PREDICTED = "predicted_duration_minutes"
ACTUAL = "actual_duration_minutes"
ERROR_COLUMNS = ("rows", "rmsle", "mae_minutes", "bias_minutes", "mean_predicted_minutes", "mean_actual_minutes")


def error_aggregates(predicted: str = PREDICTED, actual: str = ACTUAL) -> list[Column]:
    """RMSLE on minutes (as `train` reports it), MAE and bias (predicted - actual, minutes), rows with an actual."""
    p, a = F.col(predicted), F.col(actual)
    known = a.isNotNull() & p.isNotNull()
    return [
        F.count(F.when(known, F.lit(1))).alias("rows"),
        F.sqrt(F.avg(F.when(known, (F.log1p(p) - F.log1p(a)) ** 2))).alias("rmsle"),
        F.avg(F.when(known, F.abs(p - a))).alias("mae_minutes"),
        F.avg(F.when(known, p - a)).alias("bias_minutes"),
        F.avg(F.when(known, p)).alias("mean_predicted_minutes"),
        F.avg(F.when(known, a)).alias("mean_actual_minutes"),
    ]


def error_profile(by: Sequence[str], extra: Sequence[Column] = (), always: int = 0) -> Callable[[DataFrame], DataFrame]:
    """Step: scored trips -> error metrics (and `extra` aggregates) for every combination of `by` that `cube`
    makes (all rows, each column alone, ...), `grouping` telling which were rolled up (bit set = rolled up, the
    first column the highest bit). With `always` = k the first k columns of `by` are never rolled up: only the
    combinations that keep them are computed (fewer rows through the aggregation than cube-then-filter)."""
    fixed, free = list(by[:always]), list(by[always:])
    sets = [fixed + [c for i, c in enumerate(free) if mask >> i & 1] for mask in range(1 << len(free))]

    def step(df: DataFrame) -> DataFrame:
        grouped = df.cube(*by) if always == 0 else df.groupingSets(sets, *by)
        return grouped.agg(*error_aggregates(), *extra, F.grouping_id().alias("grouping"))

    return step
