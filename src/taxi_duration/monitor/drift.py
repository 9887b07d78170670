"""Drift statistics on reference quantile bins: PSI and Jensen-Shannon distance, per feature and window.

Spark does the passes that touch trips (the reference's quantiles and extremes in one aggregation, then the bin
counts of both periods, one aggregation per chunk of features); the statistics are computed from the counts, which
are small (features x bins x windows rows), on the driver.

Why Jensen-Shannon next to PSI: PSI is the industry habit but unbounded and undefined for an empty bin (it needs
the smoothing below), so its threshold means different things for a two-value flag and a ten-bin distance.
The Jensen-Shannon distance (base 2) is symmetric, bounded in [0, 1], defined with empty bins, and reads the
same on numeric bins and on categories, so one threshold serves every feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

MISSING_BIN = -1  # nulls get a bin of their own: a feature going missing is drift too
PSI_EPSILON = 1e-4  # an empty bin's share for PSI (ln(0) otherwise); the usual choice
PERIOD = "period"
REFERENCE, CURRENT = "reference", "current"
WINDOW_START = "window_start"


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "numeric" (reference quantile bins) or "categorical" (one bin per integer value)


@dataclass(frozen=True)
class ReferenceProfile:
    """What the reference says about each feature: bin edges (numeric) and whether it varies at all."""

    edges: Mapping[str, tuple[float, ...]]
    zero_variance: frozenset[str]


def reference_profile(
    reference: DataFrame, features: Sequence[Feature], bins: int, relative_error: float
) -> ReferenceProfile:
    """One aggregation over the reference: the interior quantiles (1/bins .. (bins-1)/bins) of each numeric
    feature, and min/max of every feature. A feature whose reference min equals its max (or is all null) has no
    variance: it is reported, and gets no statistic."""
    probabilities = [i / bins for i in range(1, bins)]
    accuracy = max(1, round(1 / relative_error))
    aggregates: list[Column] = []
    for feature in features:
        column = F.col(feature.name).cast("double")
        aggregates += [F.min(column).alias(f"min__{feature.name}"), F.max(column).alias(f"max__{feature.name}")]
        if feature.kind == "numeric":
            aggregates.append(F.percentile_approx(column, probabilities, accuracy).alias(f"q__{feature.name}"))
    row = reference.agg(*aggregates).first()
    assert row is not None
    edges: dict[str, tuple[float, ...]] = {}
    constant = set()
    for feature in features:
        low, high = row[f"min__{feature.name}"], row[f"max__{feature.name}"]
        if low is None or low == high:
            constant.add(feature.name)
            continue
        if feature.kind == "numeric":
            edges[feature.name] = tuple(sorted({float(v) for v in row[f"q__{feature.name}"] or []}))
    return ReferenceProfile(edges=edges, zero_variance=frozenset(constant))


def _edge_order(edge: float) -> tuple[bool, float]:
    return (math.isnan(edge), edge)  # Spark orders NaN above every number


def _search(value: Column, edges: Sequence[float], low: int, high: int) -> Column:
    """The bin in low..high of a non-null value, by binary search on the sorted edges (edges[k] separates bins k
    and k+1): ~log2(bins) comparisons per value, and less generated code than one comparison per edge."""
    if low == high:
        return F.lit(low)
    middle = (low + high) // 2
    return F.when(value > F.lit(edges[middle]), _search(value, edges, middle + 1, high)).otherwise(
        _search(value, edges, low, middle)
    )


def bin_column(feature: Feature, edges: Sequence[float]) -> Column:
    """The bin of a value: for numeric features the number of reference edges strictly below it (so bin k is
    (edge[k-1], edge[k]]), for categories the value itself; MISSING_BIN for null."""
    column = F.col(feature.name)
    if feature.kind == "numeric":
        ordered = sorted(edges, key=_edge_order)
        binned = _search(column.cast("double"), ordered, 0, len(ordered))
    else:
        binned = column.cast("int")
    return F.when(column.isNull(), F.lit(MISSING_BIN)).otherwise(binned).cast("int")


# A (feature, bin) pair as one long: the feature's index in the high 32 bits, the bin (an int, -1 for missing)
# offset into the low 32 bits. Grouping on one long is several times cheaper than on a (string, int) struct.
_BIN_SHIFT = 1 << 32
_BIN_OFFSET = 1 << 31
# Whole-stage codegen compiles a stage into one method; one over spark.sql.codegen.hugeMethodLimit (8000 bytes of
# bytecode, the JVM's limit for JIT compilation) makes Spark run the stage without codegen, about three times
# slower here (docs/benchmarks.md#monitor). Every feature's bin in one explode is ~10 kB of bytecode at 13 numeric
# features x 9 edges, so the features are binned in chunks whose estimated code stays under a budget, one explode
# and aggregation each: every chunk reads the input again, which costs less than the stage without codegen.
# Estimates measured on Spark 4.0 (generated bytes per stage, per feature, per numeric edge); a chunk they
# underestimate runs without codegen: slower, same counts.
_CODE_BUDGET = 6000
_CODE_PER_STAGE, _CODE_PER_FEATURE, _CODE_PER_EDGE = 250, 110, 70


def code_chunks(features: Sequence[Feature], profile: ReferenceProfile) -> list[list[Feature]]:
    """Features in order, cut into chunks whose binning code is estimated under the codegen budget (a feature over
    the budget on its own gets a chunk of its own)."""
    chunks: list[list[Feature]] = []
    size = _CODE_PER_STAGE
    for feature in features:
        cost = _CODE_PER_FEATURE + _CODE_PER_EDGE * len(profile.edges.get(feature.name, ()))
        if not chunks or size + cost > _CODE_BUDGET:
            chunks.append([])
            size = _CODE_PER_STAGE
        chunks[-1].append(feature)
        size += cost
    return chunks


def with_bin_counts(
    features: Sequence[Feature], profile: ReferenceProfile, group_columns: Sequence[str]
) -> Callable[[DataFrame], DataFrame]:
    """Step: rows -> (group columns..., feature, bin, rows), every feature binned (features with no reference
    variance are left out)."""
    scored = [f for f in features if f.name not in profile.zero_variance]

    def chunk_counts(df: DataFrame, chunk: Sequence[Feature], first: int) -> DataFrame:
        keys = F.array(
            *[
                F.lit(index * _BIN_SHIFT + _BIN_OFFSET) + bin_column(f, profile.edges.get(f.name, ())).cast("long")
                for index, f in enumerate(chunk, start=first)
            ]
        )
        return (
            df.select(*group_columns, F.explode(keys).alias("_key"))
            .groupBy(*group_columns, "_key")
            .agg(F.count(F.lit(1)).alias("rows"))
        )

    def step(df: DataFrame) -> DataFrame:
        if not scored:
            return df.sparkSession.createDataFrame(
                [], df.select(*group_columns).schema.add("feature", "string").add("bin", "int").add("rows", "long")
            )
        parts, first = [], 0
        for chunk in code_chunks(scored, profile):
            parts.append(chunk_counts(df, chunk, first))
            first += len(chunk)
        counted = reduce(lambda left, right: left.unionByName(right), parts)
        names = F.array(*[F.lit(f.name) for f in scored])
        return counted.select(
            *group_columns,
            F.element_at(names, F.shiftright(F.col("_key"), 32).cast("int") + F.lit(1)).alias("feature"),
            (F.col("_key").bitwiseAND(F.lit(_BIN_SHIFT - 1)) - F.lit(_BIN_OFFSET)).cast("int").alias("bin"),
            "rows",
        )

    return step


def shares(counts: Mapping[int, float], bins: Sequence[int]) -> np.ndarray:
    """Counts per bin -> shares over `bins` (zeros where a bin is absent)."""
    values = np.array([float(counts.get(b, 0.0)) for b in bins], dtype=float)
    total = values.sum()
    return values / total if total > 0 else values


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index: sum((c - r) * ln(c / r)) over bins, empty shares floored at `epsilon`."""
    r = np.maximum(reference, epsilon)
    c = np.maximum(current, epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (0 identical, 1 disjoint)."""
    m = (reference + current) / 2.0

    def kl(p: np.ndarray) -> float:
        mask = p > 0
        return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))

    divergence = 0.5 * kl(reference) + 0.5 * kl(current)
    return math.sqrt(max(divergence, 0.0))


def drift_table(
    counts: pd.DataFrame, window_column: str | None, psi_threshold: float, js_threshold: float
) -> pd.DataFrame:
    """Bin counts (period, [window], feature, bin, rows) -> one row per (window, feature): psi, js, drifted.

    The reference is the `reference` period's counts over all its rows; each current window is compared with it."""
    reference = counts[counts[PERIOD] == REFERENCE]
    current = counts[counts[PERIOD] == CURRENT]
    ref_by_feature = {
        name: dict(zip(group["bin"].astype(int), group["rows"].astype(float), strict=True))
        for name, group in reference.groupby("feature")
    }
    keys = ["feature"] if window_column is None else [window_column, "feature"]
    rows = []
    for key, group in current.groupby(keys, dropna=False):
        key_values = key if isinstance(key, tuple) else (key,)
        name = str(key_values[-1])
        ref_counts = ref_by_feature.get(name, {})
        cur_counts = dict(zip(group["bin"].astype(int), group["rows"].astype(float), strict=True))
        bins = sorted(set(ref_counts) | set(cur_counts))
        r, c = shares(ref_counts, bins), shares(cur_counts, bins)
        value_psi, value_js = psi(r, c), js_distance(r, c)
        row = {
            "feature": name,
            "psi": value_psi,
            "js_distance": value_js,
            "drifted": bool(value_psi > psi_threshold or value_js > js_threshold),
            "rows": int(sum(cur_counts.values())),
            "bins": len(bins),
        }
        if window_column is not None:
            row[window_column] = key_values[0]
        rows.append(row)
    columns = ([window_column] if window_column else []) + ["feature", "psi", "js_distance", "drifted", "rows", "bins"]
    return pd.DataFrame(rows, columns=columns)
