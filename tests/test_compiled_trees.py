"""Trees compiled into Python: the same sums as walking them, NaN to the right, nothing but numbers in the source."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from taxi_duration.serve import compiled_trees
from taxi_duration.serve.compiled_trees import compile_trees, source


def _walk(trees: list[dict[str, Any]], weights: list[float], x: list[float]) -> float:
    total = 0.0
    for tree, weight in zip(trees, weights, strict=True):
        node = 0
        while tree["feature"][node] >= 0:
            node = tree["left"][node] if x[tree["feature"][node]] <= tree["threshold"][node] else tree["right"][node]
        total += weight * tree["value"][node]
    return total


def _random_tree(rng: random.Random, features: int, depth: int) -> dict[str, Any]:
    tree: dict[str, list[Any]] = {"feature": [], "threshold": [], "left": [], "right": [], "value": []}

    def grow(level: int) -> int:
        node = len(tree["feature"])
        for key in tree:
            tree[key].append(-1 if key in ("feature", "left", "right") else 0.0)
        if level < depth and rng.random() < 0.8:
            tree["feature"][node] = rng.randrange(features)
            tree["threshold"][node] = rng.choice([rng.uniform(-2, 2), 0.0, 1.5])
            tree["left"][node] = grow(level + 1)
            tree["right"][node] = grow(level + 1)
        else:
            tree["value"][node] = rng.uniform(-1, 1)
        return node

    grow(0)
    return tree


def test_compiled_trees_sum_like_the_walk_bit_for_bit() -> None:
    rng = random.Random(11)
    features = 6
    trees = [_random_tree(rng, features, depth=rng.randint(0, 7)) for _ in range(40)]
    weights = [1.0] + [0.1] * 39
    score = compile_trees(trees, weights, features)
    assert score is not None
    for _ in range(2_000):
        x = [rng.choice([rng.uniform(-2, 2), 0.0, 1.5, math.nan]) for _ in range(features)]
        assert score(x) == _walk(trees, weights, x)  # the same additions in the same order


def test_nan_goes_right_and_non_finite_thresholds_compile() -> None:
    tree = {
        "feature": [0, -1, 1, -1, -1],
        "threshold": [math.inf, 0.0, -math.inf, 0.0, 0.0],
        "left": [1, -1, 3, -1, -1],
        "right": [2, -1, 4, -1, -1],
        "value": [0.0, 10.0, 0.0, 20.0, 30.0],
    }
    score = compile_trees([tree], [0.5], 2)
    assert score is not None
    assert score([1e300, 0.0]) == 5.0  # x0 <= inf: left leaf
    assert score([math.nan, math.nan]) == 15.0  # NaN fails both comparisons: right, then right
    assert score([math.nan, -math.inf]) == 10.0  # -inf <= -inf: left


def test_a_single_leaf_and_a_single_feature() -> None:
    leaf = {"feature": [-1], "threshold": [0.0], "left": [-1], "right": [-1], "value": [2.5]}
    score = compile_trees([leaf, leaf], [1.0, 0.1], 1)
    assert score is not None and score([3.0]) == 2.5 + 0.25


def test_only_numbers_reach_the_source() -> None:
    hostile = {"feature": [-1], "threshold": [0.0], "left": [-1], "right": [-1], "value": ["__import__('os')"]}
    with pytest.raises(ValueError, match="could not convert"):
        source([hostile], [1.0], 1)
    looping = {"feature": [0], "threshold": [0.0], "left": [0], "right": [0], "value": [0.0]}
    with pytest.raises(ValueError, match="tree 0: not a tree"):
        source([looping], [1.0], 1)
    dangling = {"feature": [0], "threshold": [0.0], "left": [5], "right": [-1], "value": [0.0]}
    with pytest.raises(ValueError, match="a branch leads to node 5 of 1"):
        source([dangling], [1.0], 1)
    split_beyond = {
        "feature": [3, -1, -1],
        "threshold": [0.0] * 3,
        "left": [1, -1, -1],
        "right": [2, -1, -1],
        "value": [0.0, 1.0, 2.0],
    }
    with pytest.raises(ValueError, match="feature 3, but the model has 2 features"):
        source([split_beyond], [1.0], 2)


def test_too_large_an_ensemble_is_left_to_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    leaf = {"feature": [-1], "threshold": [0.0], "left": [-1], "right": [-1], "value": [1.0]}
    monkeypatch.setattr(compiled_trees, "MAX_NODES", 2)
    assert compile_trees([leaf] * 3, [1.0] * 3, 1) is None
    assert compile_trees([leaf] * 2, [1.0] * 2, 1) is not None
