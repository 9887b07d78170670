"""Drift and error statistics on hand-built frames, each checked against a plain NumPy/pandas computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from taxi_duration.monitor.drift import (
    CURRENT,
    MISSING_BIN,
    PERIOD,
    REFERENCE,
    Feature,
    ReferenceProfile,
    code_chunks,
    drift_table,
    js_distance,
    psi,
    reference_profile,
    with_bin_counts,
)
from taxi_duration.monitor.quality import (
    MEDIAN_DAY,
    quarantine_shares,
    source_day_counts,
    source_median_days,
    source_periods,
)
from taxi_duration.monitor.realized import error_profile

RNG = np.random.default_rng(7)
REF_X = np.round(RNG.normal(10.0, 3.0, 2000), 3)
CUR_X = np.round(RNG.normal(12.0, 3.0, 1500), 3)
REF_C = RNG.choice([1, 2, 3], size=2000, p=[0.6, 0.3, 0.1])
CUR_C = RNG.choice([1, 2, 3, 4], size=1500, p=[0.3, 0.3, 0.3, 0.1])
FEATURES = [Feature("x", "numeric"), Feature("c", "categorical"), Feature("flat", "numeric")]


def numpy_psi(ref: np.ndarray, cur: np.ndarray) -> float:
    r, c = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(((c - r) * np.log(c / r)).sum())


def numpy_js(ref: np.ndarray, cur: np.ndarray) -> float:
    m = (ref + cur) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_r = np.nansum(np.where(ref > 0, ref * np.log2(ref / m), 0.0))
        kl_c = np.nansum(np.where(cur > 0, cur * np.log2(cur / m), 0.0))
    return math.sqrt(0.5 * kl_r + 0.5 * kl_c)


@pytest.fixture(scope="module")
def frame(spark: SparkSession):
    rows = [(REFERENCE, float(x), int(c), 5.0) for x, c in zip(REF_X, REF_C, strict=True)]
    rows += [(CURRENT, float(x), int(c), 5.0 + (i % 3)) for i, (x, c) in enumerate(zip(CUR_X, CUR_C, strict=True))]
    rows.append((CURRENT, None, None, 5.0))  # a missing value is a bin of its own
    return spark.createDataFrame(rows, f"{PERIOD} string, x double, c int, flat double")


def test_psi_and_js_on_shares_equal_the_plain_formulas() -> None:
    ref = np.array([0.5, 0.3, 0.2, 0.0])
    cur = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(ref, cur) == pytest.approx(numpy_psi(ref, cur), abs=1e-12)
    assert js_distance(ref, cur) == pytest.approx(numpy_js(ref, cur), abs=1e-12)
    assert psi(ref, ref) == 0.0 and js_distance(ref, ref) == 0.0
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_reference_edges_are_quantiles_and_flat_features_are_reported(frame) -> None:
    profile = reference_profile(frame.filter(F.col(PERIOD) == REFERENCE), FEATURES, 10, 0.001)
    assert profile.zero_variance == frozenset({"flat"})
    assert "flat" not in profile.edges and "c" not in profile.edges
    expected = np.quantile(REF_X, [i / 10 for i in range(1, 10)], method="inverted_cdf")
    # percentile_approx returns elements of the data within a rank error of 0.1% of 2,000 rows: 2 ranks
    ranks = np.searchsorted(np.sort(REF_X), np.array(profile.edges["x"]))
    expected_ranks = np.searchsorted(np.sort(REF_X), expected)
    assert np.all(np.abs(ranks - expected_ranks) <= 2)
    assert set(profile.edges["x"]) <= set(REF_X.tolist())


def test_bin_counts_and_drift_equal_numpy_on_the_same_edges(frame) -> None:
    profile = reference_profile(frame.filter(F.col(PERIOD) == REFERENCE), FEATURES, 10, 0.001)
    counts = frame.transform(with_bin_counts(FEATURES, profile, [PERIOD])).toPandas()
    edges = np.array(profile.edges["x"])
    for period, values in ((REFERENCE, REF_X), (CURRENT, CUR_X)):
        # bin k is (edge[k-1], edge[k]]: the number of edges strictly below the value
        expected = pd.Series(np.searchsorted(edges, values, side="left")).value_counts().to_dict()
        if period == CURRENT:
            expected[MISSING_BIN] = 1
        got = counts[(counts[PERIOD] == period) & (counts["feature"] == "x")]
        assert dict(zip(got["bin"], got["rows"], strict=True)) == expected
    assert set(counts["feature"]) == {"x", "c"}  # the flat feature gets no statistic

    table = drift_table(counts, None, 0.25, 0.2).set_index("feature")
    bins = list(range(-1, len(edges) + 1))
    ref = np.array([np.sum(np.searchsorted(edges, REF_X) == b) for b in bins], dtype=float)
    cur = np.array([np.sum(np.searchsorted(edges, CUR_X) == b) + (b == MISSING_BIN) for b in bins], dtype=float)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    assert table.loc["x", "psi"] == pytest.approx(numpy_psi(ref, cur), rel=1e-9)
    assert table.loc["x", "js_distance"] == pytest.approx(numpy_js(ref, cur), rel=1e-9)
    assert bool(table.loc["x", "drifted"]) is True

    cats = [-1, 1, 2, 3, 4]
    ref_c = np.array([int(np.count_nonzero(np.equal(REF_C, k))) for k in cats], dtype=float)
    cur_c = np.array([int(np.count_nonzero(np.equal(CUR_C, k))) + (k == -1) for k in cats], dtype=float)
    ref_c, cur_c = ref_c / ref_c.sum(), cur_c / cur_c.sum()
    assert table.loc["c", "psi"] == pytest.approx(numpy_psi(ref_c, cur_c), rel=1e-9)
    assert table.loc["c", "js_distance"] == pytest.approx(numpy_js(ref_c, cur_c), rel=1e-9)


def test_bin_counts_over_several_code_chunks_equal_numpy(spark: SparkSession) -> None:
    # enough features and edges that the binning is cut into several codegen chunks; values on an edge belong
    # to the bin below it, null is MISSING_BIN, NaN is above every edge, a category is its own value (negative too)
    rng = np.random.default_rng(11)
    edges = {
        f"n{i}": tuple(float(e) for e in np.sort(rng.choice(np.arange(-50, 50), size=5 + 4 * i, replace=False)))
        for i in range(12)
    }
    features = [Feature(name, "numeric") for name in edges] + [Feature("c", "categorical")]
    profile = ReferenceProfile(edges=edges, zero_variance=frozenset())
    assert len(code_chunks(features, profile)) >= 3
    values = {name: rng.choice([*edges[name], *np.round(rng.uniform(-60, 60, 40), 1)], size=400) for name in edges}
    values["n0"][:3] = np.nan  # NaN: the last bin (Spark orders NaN above every number)
    categories = rng.choice([-3, 0, 2, 7], size=400)
    periods = np.where(np.arange(400) % 3 == 0, CURRENT, REFERENCE)
    rows = [
        (
            str(periods[r]),
            *[None if r % 17 == i else float(values[name][r]) for i, name in enumerate(edges)],
            None if r % 23 == 0 else int(categories[r]),
        )
        for r in range(400)
    ]
    schema = ", ".join([f"{PERIOD} string", *(f"{name} double" for name in edges), "c int"])
    counts = spark.createDataFrame(rows, schema).transform(with_bin_counts(features, profile, [PERIOD])).toPandas()

    expected = []
    for period in (REFERENCE, CURRENT):
        chosen = [r for r in range(400) if periods[r] == period]
        for i, name in enumerate(edges):
            bins = [MISSING_BIN if r % 17 == i else int(np.searchsorted(edges[name], values[name][r])) for r in chosen]
            expected += [(period, name, b, n) for b, n in pd.Series(bins).value_counts().items()]
        cats = [MISSING_BIN if r % 23 == 0 else int(categories[r]) for r in chosen]
        expected += [(period, "c", b, n) for b, n in pd.Series(cats).value_counts().items()]
    got = {(r[PERIOD], r["feature"], int(r["bin"]), int(r["rows"])) for r in counts.to_dict(orient="records")}
    assert got == {(p, f, int(b), int(n)) for p, f, b, n in expected}
    assert len(got) == len(counts)


def test_same_distribution_does_not_drift(frame) -> None:
    reference = frame.filter(F.col(PERIOD) == REFERENCE)
    again = reference.withColumn(PERIOD, F.lit(CURRENT))
    profile = reference_profile(reference, FEATURES, 10, 0.001)
    counts = reference.unionByName(again).transform(with_bin_counts(FEATURES, profile, [PERIOD])).toPandas()
    table = drift_table(counts, None, 0.25, 0.2)
    assert table["psi"].tolist() == [0.0, 0.0] and not table["drifted"].any()


def test_error_profile_equals_pandas(spark: SparkSession) -> None:
    data = pd.DataFrame(
        {
            "g": ["a", "a", "b", "b", "b"],
            "predicted_duration_minutes": [10.0, 5.0, 20.0, 8.0, 3.0],
            "actual_duration_minutes": [12.0, 4.0, 10.0, 8.0, None],
        }
    )
    got = (
        spark.createDataFrame(
            data.astype(object).where(data.notna(), None),
            "g string, predicted_duration_minutes double, actual_duration_minutes double",
        )
        .transform(error_profile(["g"]))
        .toPandas()
    )
    known = data.dropna()
    for group, rows in [*known.groupby("g"), (None, known)]:
        p, a = rows["predicted_duration_minutes"], rows["actual_duration_minutes"]
        row = got[got["g"].isna()].iloc[0] if group is None else got[got["g"] == group].iloc[0]
        assert row["rows"] == len(rows)
        assert row["rmsle"] == pytest.approx(float(np.sqrt(((np.log1p(p) - np.log1p(a)) ** 2).mean())), rel=1e-12)
        assert row["mae_minutes"] == pytest.approx(float((p - a).abs().mean()), rel=1e-12)
        assert row["bias_minutes"] == pytest.approx(float((p - a).mean()), rel=1e-12)


def test_quarantine_share_per_reason_by_source_month(spark: SparkSession) -> None:
    from datetime import datetime

    trips = spark.createDataFrame(
        [("jan", "2018-01-10 08:00:00")] * 8 + [("jan", "2018-02-01 00:10:00")] + [("jun", "2018-06-05 09:00:00")] * 4,
        "source string, pickup string",
    ).select("source", F.col("pickup").cast("timestamp").alias("pickup_datetime"))
    quarantine = spark.createDataFrame(
        [("jan", "zero_distance")] * 2 + [("jun", "zero_distance"), ("jun", "unknown_zone"), ("jun", "unknown_zone")],
        "source string, reason string",
    )
    day_counts = source_day_counts(trips)
    periods = source_periods(
        day_counts, (datetime(2018, 6, 1), datetime(2018, 7, 1)), (datetime(2018, 1, 1), datetime(2018, 4, 1))
    )
    got = quarantine_shares(day_counts, quarantine, periods)
    expected = spark.createDataFrame(
        [
            (REFERENCE, "zero_distance", 2, 11, 2 / 11),
            (REFERENCE, "all", 2, 11, 2 / 11),
            (CURRENT, "zero_distance", 1, 7, 1 / 7),
            (CURRENT, "unknown_zone", 2, 7, 2 / 7),
            (CURRENT, "all", 3, 7, 3 / 7),
        ],
        f"{PERIOD} string, reason string, rows long, input_rows long, share double",
    )
    assertDataFrameEqual(got, expected)


def test_a_source_is_dated_by_the_day_of_its_lower_median_pickup(spark: SparkSession) -> None:
    days = {"a": [("2018-03-01", 3), ("2018-03-02", 1), ("2018-03-05", 3)], "b": [("2018-04-10", 2), ("2018-04-11", 2)]}
    rows = [
        (source, f"{day} {hour:02d}:30:00") for source, counts in days.items() for day, n in counts for hour in range(n)
    ]
    trips = spark.createDataFrame(rows, "source string, pickup string").select(
        "source", F.col("pickup").cast("timestamp").alias("pickup_datetime")
    )
    expected = spark.createDataFrame(
        [("a", "2018-03-02 00:00:00"), ("b", "2018-04-10 00:00:00")], "source string, day string"
    ).select("source", F.col("day").cast("timestamp").alias(MEDIAN_DAY))
    # a: 7 trips, the 4th is on the 2nd; b: 4 trips, the lower median (2nd) is on the 10th
    assertDataFrameEqual(source_median_days(source_day_counts(trips.repartition(3))), expected)
