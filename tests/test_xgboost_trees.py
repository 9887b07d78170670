"""XGBoost's JSON model converted for the JVM-free predictor gives XGBoost's own predictions to the bit: values at,
just around and exactly between float32 thresholds, NaN to each node's side, float32 sums (no Spark here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xgboost as xgb

from taxi_duration.serve.xgboost_trees import XGBoostModelError, base_score, le_threshold, read_booster_json, scorers


def _below32(value: float) -> float:
    return float(np.nextafter(np.float32(value), np.float32(-np.inf)))


@pytest.mark.parametrize("threshold", [0.1, 1.0, 2.5, 3.0000002, -7.25, 0.0, 1e-30, 6.502784, 123456.79, 1e30])
def test_le_threshold_matches_float32_strict_comparison(threshold: float) -> None:
    t = np.float32(threshold)
    m = le_threshold(threshold)
    below = _below32(threshold)
    middle = (below + float(t)) / 2
    candidates = [
        float(t),
        below,
        middle,
        math.nextafter(middle, math.inf),
        math.nextafter(middle, -math.inf),
        math.nextafter(float(t), math.inf),
        math.nextafter(float(t), -math.inf),
        math.nextafter(below, -math.inf),
        m,
        math.nextafter(m, math.inf),
    ]
    for x in candidates:
        assert (x <= m) == bool(np.float32(x) < t), (threshold, x, m)


def test_base_score_in_both_spellings() -> None:
    assert base_score({"base_score": "[6.502784E0]"}) == float(np.float32(6.502784))
    assert base_score({"base_score": "5E-1"}) == 0.5
    with pytest.raises(XGBoostModelError):
        base_score({"base_score": "[1E0,2E0]"})


@pytest.fixture(scope="module")
def booster_and_data() -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(3)
    rows = 4000
    x = np.column_stack([rng.normal(size=rows), rng.uniform(0, 10, rows), np.round(rng.uniform(0, 5, rows), 1)])
    y = 6.0 + 0.4 * np.nan_to_num(x[:, 0]) + 0.15 * x[:, 1] - 0.2 * x[:, 2] + rng.normal(0, 0.05, rows)
    # NaN in training rows on purpose, so that splits learn either default side
    x[rng.random(rows) < 0.15, 0] = np.nan
    x[rng.random(rows) < 0.1, 2] = np.nan
    params = {"max_depth": 6, "eta": 0.3, "tree_method": "hist", "objective": "reg:squarederror", "seed": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=40)
    return booster, x


def _adversarial_rows(document: dict, columns: int) -> np.ndarray:
    """For every split: the float32 threshold itself, its neighbours and the float64 values around the point
    between it and the float32 below (where float64 -> float32 rounding decides the side), and NaN."""
    values: dict[int, set[float]] = {i: set() for i in range(columns)}
    for tree in document["learner"]["gradient_booster"]["model"]["trees"]:
        for node, feature in enumerate(tree["split_indices"]):
            if tree["left_children"][node] < 0:
                continue
            t = float(np.float32(tree["split_conditions"][node]))
            below = _below32(t)
            middle = (below + t) / 2
            values[feature] |= {t, below, middle, math.nextafter(middle, math.inf), math.nextafter(middle, -math.inf)}
            values[feature] |= {math.nextafter(t, math.inf), math.nextafter(t, -math.inf)}
    rng = np.random.default_rng(9)
    longest = max(len(v) for v in values.values())
    matrix = np.empty((longest * 3, columns))
    for feature, found in values.items():
        column = np.array(sorted(found) or [0.0])
        matrix[:, feature] = rng.choice(column, size=matrix.shape[0])
    matrix[::7, 0] = np.nan
    matrix[::5, 2] = np.nan
    return matrix


def test_converted_trees_give_xgboost_predictions_bit_for_bit(booster_and_data: tuple[xgb.Booster, np.ndarray]) -> None:
    booster, x = booster_and_data
    text = booster.save_raw("json").decode("utf-8")
    document = json.loads(text)
    converted = read_booster_json(text, 3)
    assert len(converted["trees"]) == 40
    assert any(any(tree["missing_left"]) for tree in converted["trees"])  # NaN goes left somewhere
    assert any(
        not left and f >= 0
        for tree in converted["trees"]
        for f, left in zip(tree["feature"], tree["missing_left"], strict=True)
    )  # and right elsewhere
    single, batch = scorers(converted["trees"], converted["base_score"], 3)
    rows = np.vstack([x, _adversarial_rows(document, 3)])
    expected = booster.inplace_predict(rows, missing=np.nan)
    assert expected.dtype == np.float32
    got = batch(rows)
    assert np.array_equal(got, expected.astype(np.float64))
    for row, want in zip(rows[::3], expected[::3], strict=True):
        assert single(list(row)) == float(want)
    # float64 sums would not do: on these rows they differ from XGBoost's in the last float32 bits
    plain = converted["base_score"] + sum(
        np.asarray(tree["value"])[_leaf_index(tree, rows)] for tree in converted["trees"]
    )
    assert not np.array_equal(plain, expected.astype(np.float64))


def _leaf_index(tree: dict, rows: np.ndarray) -> np.ndarray:
    index = np.zeros(len(rows), dtype=np.int64)
    for _ in range(20):
        feature = np.asarray(tree["feature"])[index]
        inner = feature >= 0
        values = rows[np.arange(len(rows)), np.where(inner, feature, 0)]
        left = (values <= np.asarray(tree["threshold"])[index]) | (
            np.isnan(values) & np.asarray(tree["missing_left"])[index]
        )
        nxt = np.where(left, np.asarray(tree["left"])[index], np.asarray(tree["right"])[index])
        index = np.where(inner, nxt, index)
    return index


def test_models_that_cannot_be_reproduced_are_refused(booster_and_data: tuple[xgb.Booster, np.ndarray]) -> None:
    booster, _ = booster_and_data
    document = json.loads(booster.save_raw("json").decode("utf-8"))
    with pytest.raises(XGBoostModelError, match="features"):
        read_booster_json(json.dumps(document), 4)
    document["learner"]["objective"]["name"] = "reg:gamma"
    with pytest.raises(XGBoostModelError, match="objective reg:gamma"):
        read_booster_json(json.dumps(document), 3)
    with pytest.raises(XGBoostModelError, match="not an XGBoost JSON model"):
        read_booster_json('{"learner": {}}', 3)
