"""XGBoost's own JSON model -> the exported model's trees, and their evaluation to the bit without XGBoost.

The fitted `SparkXGBRegressorModel` stage saves `model/part-*`: the booster's `save_raw("json")` text cut into
lines (xgboost.spark joins them back without separators). Read as JSON only (nothing unpickled; xgboost is not
imported). XGBoost's semantics, which the export and the scorers here reproduce:

- features are float32: Spark's doubles are rounded to nearest (even on ties) before any comparison;
- a split sends a value left when `value < threshold` (strict; float32 threshold), where MLlib's go left on
  `value <= threshold`. For a float64 `x`, `float32(x) < t` is `x <= m` with `m` the midpoint between `t` and the
  float32 below it (exact in float64), or the double just below `m` when a tie there rounds up to `t`: the export
  stores that `m`, so the trees keep the predictor's `<=` form and no value is cast;
- NaN (a NULL feature, `missing` = NaN) goes to the node's learned side (`default_left`), not always right as in
  MLlib: the export stores `missing_left` per node;
- the prediction is `base_score` (learner_model_param, written "[6.5E0]" since XGBoost 3.1, "6.5E0" before) plus
  the leaf values, added in float32 one tree after another: reproduced with numpy float32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from taxi_duration.serve.compiled_trees import MAX_NODES, TreeArrays, node_count, source

# objectives whose prediction is the raw sum of the trees (identity link): the label's scale, ln(seconds)
IDENTITY_OBJECTIVES = ("reg:squarederror", "reg:pseudohubererror", "reg:absoluteerror")


class XGBoostModelError(ValueError):
    """An XGBoost model the exporter cannot reproduce exactly (another objective, categorical splits, ...)."""


def le_threshold(threshold: float) -> float:
    """The float64 `m` with `x <= m` exactly when `float32(x) < float32(threshold)`, for every float64 x."""
    t = np.float32(threshold)
    below = np.nextafter(t, np.float32(-np.inf))
    if not (np.isfinite(t) and np.isfinite(below)):
        raise XGBoostModelError(f"split threshold {threshold!r} is not a finite float32 with a finite one below it")
    middle = (float(below) + float(t)) / 2.0  # exact: float32 significands have 24 bits, doubles 53
    # a value exactly at the middle rounds to the float32 of even significand: `below` (left) or `t` (right)
    below_is_even = int(np.array(below, dtype=np.float32).view(np.uint32)) & 1 == 0
    return middle if below_is_even else math.nextafter(middle, -math.inf)


def base_score(learner_model_param: Mapping[str, Any]) -> float:
    """The intercept as a float32 value; "[6.502784E0]" (XGBoost >= 3.1, one per target) or "6.502784E0"."""
    text = str(learner_model_param.get("base_score", "")).strip().removeprefix("[").removesuffix("]")
    values = [part for part in text.split(",") if part.strip()]
    if len(values) != 1:
        raise XGBoostModelError(f"base_score {learner_model_param.get('base_score')!r}: expected one value")
    return float(np.float32(float(values[0])))


def _tree(raw: Mapping[str, Any], number: int, num_features: int) -> dict[str, Any]:
    """One XGBoost tree -> the export's flat arrays; nodes that pruning left unreachable become zero leaves."""
    left_children = [int(c) for c in raw["left_children"]]
    right_children = [int(c) for c in raw["right_children"]]
    indices, conditions = raw["split_indices"], raw["split_conditions"]
    default_left, split_type = raw["default_left"], raw.get("split_type") or [0] * len(left_children)
    size = len(left_children)
    if not size or any(len(a) != size for a in (right_children, indices, conditions, default_left, split_type)):
        raise XGBoostModelError(f"tree {number}: node arrays of different lengths")
    feature, left, right = [-1] * size, [-1] * size, [-1] * size
    threshold, value, missing_left = [0.0] * size, [0.0] * size, [False] * size
    seen: set[int] = set()
    stack = [0]
    while stack:
        node = stack.pop()
        if not 0 <= node < size or node in seen:
            raise XGBoostModelError(f"tree {number}: not a tree (a branch leads to node {node} of {size})")
        seen.add(node)
        condition = float(conditions[node])
        if not math.isfinite(condition):
            raise XGBoostModelError(f"tree {number} node {node}: {condition}")
        if left_children[node] < 0:  # a leaf: split_conditions holds its value (learning rate applied)
            value[node] = float(np.float32(condition))
            continue
        if int(split_type[node]) != 0:
            raise XGBoostModelError(f"tree {number} node {node}: a categorical split (only numeric ones export)")
        index = int(indices[node])
        if not 0 <= index < num_features:
            raise XGBoostModelError(f"tree {number} node {node}: a split on feature {index} of {num_features}")
        feature[node], threshold[node] = index, le_threshold(condition)
        left[node], right[node] = left_children[node], right_children[node]
        missing_left[node] = bool(int(default_left[node]))
        stack += [right[node], left[node]]
    return {
        "feature": feature,
        "threshold": threshold,
        "left": left,
        "right": right,
        "value": value,
        "missing_left": missing_left,
    }


def read_booster_json(text: str, num_features: int) -> dict[str, Any]:
    """XGBoost's JSON model (as `save_raw("json")` writes it) -> the export's fields for kind xgboost."""
    try:
        learner = json.loads(text)["learner"]
        params = learner["learner_model_param"]
        objective = learner["objective"]["name"]
        model = learner["gradient_booster"]["model"]
        raw_trees = model["trees"]
    except (ValueError, KeyError, TypeError) as exc:
        raise XGBoostModelError(f"not an XGBoost JSON model of trees ({exc.__class__.__name__}: {exc})") from None
    if objective not in IDENTITY_OBJECTIVES:
        raise XGBoostModelError(f"objective {objective}: only {', '.join(IDENTITY_OBJECTIVES)} export")
    if int(params.get("num_target", 1)) > 1 or int(params.get("num_class", 0)) > 0:
        raise XGBoostModelError("a model of several targets or classes")
    if int(params.get("num_feature", num_features)) != num_features:
        raise XGBoostModelError(f"the booster has {params.get('num_feature')} features, the assembler {num_features}")
    if "best_iteration" in (learner.get("attributes") or {}):
        raise XGBoostModelError("a model fitted with early stopping (predictions stop at best_iteration)")
    if not raw_trees:
        raise XGBoostModelError("a model without trees")
    trees = [_tree(raw, number, num_features) for number, raw in enumerate(raw_trees)]
    return {"trees": trees, "base_score": base_score(params), "objective": objective}


# ---------------------------------------------------------------------------------------------- scoring


class _Batch(TreeArrays):
    """An XGBoost tree as arrays, with each node's side for NaN and float32 leaf values."""

    def __init__(self, tree: Mapping[str, Any]) -> None:
        super().__init__(tree)
        self.missing_left = np.asarray(tree["missing_left"], dtype=bool)
        self.value = np.asarray(tree["value"], dtype=np.float32)

    def leaves(self, matrix: np.ndarray) -> np.ndarray:
        rows = np.arange(matrix.shape[0])
        index = np.zeros(matrix.shape[0], dtype=np.int64)
        for _ in range(self.depth):
            values = matrix[rows, self.feature[index]]
            go_left = (values <= self.threshold[index]) | (np.isnan(values) & self.missing_left[index])
            index = np.where(go_left, self.left[index], self.right[index])
        return self.value[index]


def scorers(
    trees: Sequence[Mapping[str, Any]], base: float, features: int
) -> tuple[Callable[[Sequence[float]], float], Callable[[np.ndarray], np.ndarray]]:
    """(one trip, a matrix of trips) -> ln(seconds), XGBoost's float32 sum in tree order, as float64."""
    if not trees or any("missing_left" not in tree for tree in trees):
        raise XGBoostModelError("xgboost trees need missing_left for every node")
    batch = [_Batch(tree) for tree in trees]
    start = np.float32(base)

    def score_matrix(matrix: np.ndarray) -> np.ndarray:
        total = np.full(matrix.shape[0], start, dtype=np.float32)
        for tree in batch:
            total += tree.leaves(matrix)  # float32 + float32, one tree after another, as XGBoost's CPU predictor
        return total.astype(np.float64)

    if node_count(trees) > MAX_NODES:  # too large to compile quickly: one row through the arrays
        return (lambda x: float(score_matrix(np.asarray([x], dtype=np.float64))[0])), score_matrix
    namespace: dict[str, Any] = {"_INF": math.inf, "_NAN": math.nan}
    code = source(trees, [1.0] * len(trees), features, missing_left=[t["missing_left"] for t in trees], leaves=True)
    exec(compile(code, "<compiled xgboost trees>", "exec"), namespace)  # numbers only (compiled_trees)
    leaves: Callable[[Sequence[float]], list[float]] = namespace["score"]

    def score(x: Sequence[float]) -> float:
        # np.add.accumulate adds one element after another in float32 (np.sum would add pairwise)
        return float(np.add.accumulate(np.asarray([start, *leaves(x)], dtype=np.float32))[-1])

    return score, score_matrix
