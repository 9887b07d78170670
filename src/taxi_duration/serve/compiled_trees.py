"""A tree ensemble compiled into one Python function of nested `if`s: one trip in a few microseconds.

Walking nested tuples costs an index, a comparison and a tuple unpack per step (100 trees of depth 5: about 40 µs a
trip); the same trees as straight-line code are local-variable comparisons against constants, a few times faster
(benchmarks/serve.py, docs/benchmarks.md). The results are the same to the last bit: each tree adds its weighted
leaf value to the total in the same order as the walk, and `x <= threshold` is False for NaN, so a NULL feature goes
right, as in Spark.

Only numbers from the model document reach the source: feature indices through `int()`, thresholds and leaf values
through `float()` and `repr()` (non-finite values through names bound in the function's globals), so a model file
cannot inject code. Ensembles too large to compile quickly (`MAX_NODES`) are left to the walk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

MAX_NODES = 200_000  # compile time grows with the nodes (30 full trees of depth 10, 61,410 nodes: 2.2 s); then walk
_NAMES = {"_INF": math.inf, "_NAN": math.nan}


def _literal(value: float) -> str:
    if math.isnan(value):
        return "_NAN"
    if math.isinf(value):
        return "_INF" if value > 0 else "(-_INF)"
    return repr(value)


def node_count(trees: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(tree["feature"]) for tree in trees)


def tree_depth(tree: Mapping[str, Any]) -> int:
    """The longest path from the root to a leaf (levels a vectorised walk over a batch of rows must take)."""
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if tree["feature"][node] >= 0:
            stack += [(int(tree["left"][node]), depth + 1), (int(tree["right"][node]), depth + 1)]
    return deepest


class TreeArrays:
    """One tree as arrays for level-by-level evaluation of many rows: split feature, threshold and children per
    node, leaves pointing at themselves (so every row can take `depth` steps), and the tree's depth."""

    def __init__(self, tree: Mapping[str, Any]) -> None:
        feature = np.asarray(tree["feature"], dtype=np.int64)
        nodes = np.arange(len(feature))
        leaf = feature < 0
        self.feature = np.where(leaf, 0, feature)
        self.threshold = np.asarray(tree["threshold"], dtype=np.float64)
        self.left = np.where(leaf, nodes, np.asarray(tree["left"], dtype=np.int64))
        self.right = np.where(leaf, nodes, np.asarray(tree["right"], dtype=np.int64))
        self.depth = tree_depth(tree)


def source(
    trees: Sequence[Mapping[str, Any]],
    weights: Sequence[float],
    features: int,
    *,
    missing_left: Sequence[Sequence[bool]] | None = None,
    leaves: bool = False,
) -> str:
    """The function's source: `score(x)` over a sequence of `features` floats, the sum of the weighted leaves.

    XGBoost's trees (`xgboost_trees`): `missing_left[tree][node]` sends NaN left at that node (`x <= t or x != x`),
    and with `leaves` the function returns the leaf values in tree order, for the caller to add in float32."""
    lines = ["def score(x):"]
    names = [f"x{i}" for i in range(features)]
    lines.append(f"    {', '.join(names)}{',' if features == 1 else ''} = x")
    lines.append("    t = []\n    a = t.append" if leaves else "    t = 0.0")
    for number, (tree, weight) in enumerate(zip(trees, weights, strict=True)):
        feature, threshold = tree["feature"], tree["threshold"]
        left, right, value = tree["left"], tree["right"], tree["value"]
        seen: set[int] = set()
        stack: list[tuple[int, int, str]] = [(0, 1, "")]  # (node, indent, the line's prefix before the node)
        while stack:
            node, indent, prefix = stack.pop()
            if not 0 <= node < len(feature) or node in seen:
                raise ValueError(f"tree {number}: not a tree (a branch leads to node {node} of {len(feature)})")
            seen.add(node)
            pad = "    " * indent
            if prefix:
                lines.append(pad[:-4] + prefix)
            f = int(feature[node])
            if f < 0:
                leaf = _literal(float(weight) * float(value[node]))
                lines.append(f"{pad}a({leaf})" if leaves else f"{pad}t += {leaf}")
                continue
            if f >= features:
                raise ValueError(f"a split on feature {f}, but the model has {features} features")
            nan_left = missing_left is not None and bool(missing_left[number][node])
            either = f" or {names[f]} != {names[f]}" if nan_left else ""
            lines.append(f"{pad}if {names[f]} <= {_literal(float(threshold[node]))}{either}:")
            # the right branch is emitted after the left one: pushed first, popped last
            stack.append((int(right[node]), indent + 1, "else:"))
            stack.append((int(left[node]), indent + 1, ""))
    lines.append("    return t")
    return "\n".join(lines) + "\n"


def compile_trees(
    trees: Sequence[Mapping[str, Any]], weights: Sequence[float], features: int
) -> Callable[[Sequence[float]], float] | None:
    """`score(x)` for numeric-split trees, or None when the ensemble is over `MAX_NODES` nodes."""
    if node_count(trees) > MAX_NODES:
        return None
    namespace: dict[str, Any] = dict(_NAMES)
    exec(compile(source(trees, weights, features), "<compiled trees>", "exec"), namespace)  # numbers only (module doc)
    score: Callable[[Sequence[float]], float] = namespace["score"]
    return score
