"""Spark PipelineModel folder -> a portable `model.json` that plain Python serves, without a JVM.

A saved PipelineModel (`PipelineModel.write().save(dir)`, or the `sparkml/` folder of an MLflow Spark model) is
`metadata/part-*` (one-line JSON) plus `stages/<n>_<uid>/{metadata,data,treesMetadata}`. Stage metadata is JSON
text; the fitted numbers are Parquet, read here with pyarrow:

- trees (GBT, random forest): `data/` has one row per node: treeID, nodeData{id, prediction, impurity,
  impurityStats, rawCount, gain, leftChild, rightChild, split{featureIndex, leftCategoriesOrThreshold,
  numCategories}}; leaves have leftChild = rightChild = -1. A continuous split (numCategories = -1) sends a value
  left when value <= threshold, so NaN (a NULL feature under handleInvalid='keep') always goes right; a
  categorical split sends it left when it is one of the listed categories. `treesMetadata/` holds
  (treeID, metadata JSON, weight); Spark 4 names the columns _1, _2, _3.
- linear regression: `data/` has intercept, coefficients (an ML vector struct: type 1 dense values, type 0 sparse
  size/indices/values) and scale (Huber only); prediction = coefficients . features + intercept.
- XGBoost (`xgboost.spark` SparkXGBRegressorModel): `model/part-*` is XGBoost's own JSON model, converted by
  `xgboost_trees` (thresholds for `<=`, the side NaN takes per node, base_score, float32 sums). Its metadata may
  carry cloudpickled callbacks (`serialized_callbacks`), which xgboost.spark's reader would unpickle: the export
  reads only the JSON parameters and the JSON model, and refuses a model whose metadata carries them.

The export is JSON only (no pickle): model kind, feature columns in assembler order, trees as flat arrays indexed
by node id, tree weights and how they combine (GBT: weighted sum, RF: mean), or intercept and coefficients; model
name, version and metrics; the SQLTransformer statement for reference and the lookup tables it embeds.

`log_exported_model` logs that export with a train's MLflow run, read back from the logged Spark model artifact.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow

from taxi_duration.errors import TaxiDurationError
from taxi_duration.features.definitions import FEATURE_COLUMNS, feature_sql, travel_times_in
from taxi_duration.serve.champion import EXPORTED_ARTIFACT
from taxi_duration.serve.feature_tables import FeatureTables
from taxi_duration.serve.predictor import log_exported_pyfunc
from taxi_duration.serve.xgboost_trees import XGBoostModelError, read_booster_json

FORMAT = "taxi-duration-exported-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"

GBT_CLASS = "org.apache.spark.ml.regression.GBTRegressionModel"
RF_CLASS = "org.apache.spark.ml.regression.RandomForestRegressionModel"
LINEAR_CLASS = "org.apache.spark.ml.regression.LinearRegressionModel"
XGBOOST_CLASS = "xgboost.spark.estimator.SparkXGBRegressorModel"  # saved by xgboost.spark's own writer
SQL_CLASS = "org.apache.spark.ml.feature.SQLTransformer"
ASSEMBLER_CLASS = "org.apache.spark.ml.feature.VectorAssembler"
# the JVM writes the first; pyspark's own writer (used under Spark Connect) the second, with the same layout
PIPELINE_CLASSES = ("org.apache.spark.ml.PipelineModel", "pyspark.ml.pipeline.PipelineModel")
KINDS = {GBT_CLASS: "gbt", RF_CLASS: "rf", LINEAR_CLASS: "linear", XGBOOST_CLASS: "xgboost"}
PYFUNC_ARTIFACT = "exported_model"  # the logged MLflow pyfunc model wrapping the export


class ExportError(TaxiDurationError):
    """A model folder that cannot be exported (not a pipeline of ours, unreadable, other feature code)."""


def _read_metadata(folder: Path) -> dict[str, Any]:
    """The one-line JSON a Spark ML writer puts in `folder/metadata/part-*`."""
    parts = sorted((folder / "metadata").glob("part-*"))
    for part in parts:
        for line in part.read_text(encoding="utf-8").splitlines():
            if line.strip():
                data = json.loads(line)
                if not isinstance(data, dict):
                    break
                return data
    raise ExportError(f"{folder}: no Spark ML metadata (expected metadata/part-* with one JSON line)")


def _pipeline_folder(model_dir: Path) -> Path:
    """The PipelineModel folder: `model_dir` itself, or `model_dir/sparkml` for an MLflow Spark model."""
    if (model_dir / "metadata").is_dir():
        return model_dir
    if (model_dir / "sparkml" / "metadata").is_dir():
        return model_dir / "sparkml"
    raise ExportError(f"{model_dir}: not a saved Spark PipelineModel (no metadata/ folder, nor sparkml/metadata/)")


def _stage_folders(pipeline: Path, uids: list[str]) -> list[Path]:
    stages = pipeline / "stages"
    folders = []
    for index, uid in enumerate(uids):
        folder = stages / f"{index}_{uid}"
        if not folder.is_dir():
            raise ExportError(f"{pipeline}: stage folder {folder.name} is missing")
        folders.append(folder)
    return folders


def _param(metadata: Mapping[str, Any], name: str) -> Any:
    params = metadata.get("paramMap", {})
    if name in params:
        return params[name]
    return metadata.get("defaultParamMap", {}).get(name)


def _read_table(folder: Path) -> list[dict[str, Any]]:
    # imported here: exporting runs in the pipeline (which has pyarrow), next to Spark; serving only reads model.json
    import pyarrow.parquet as pq

    if not folder.is_dir():
        raise ExportError(f"{folder}: missing model data folder")
    return pq.read_table(folder).to_pylist()


def _finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ExportError(f"{what} is {number}: a portable model needs finite numbers")
    return number


def _trees(stage: Path, num_features: int) -> list[dict[str, Any]]:
    """Node rows -> one dict of flat arrays per tree, indexed by node id (root = 0)."""
    by_tree: dict[int, dict[int, dict[str, Any]]] = {}
    for row in _read_table(stage / "data"):
        node = row["nodeData"]
        by_tree.setdefault(int(row["treeID"]), {})[int(node["id"])] = node
    if not by_tree or sorted(by_tree) != list(range(len(by_tree))):
        raise ExportError(f"{stage}: tree ids are not 0..n-1")
    trees = []
    for tree_id in range(len(by_tree)):
        nodes = by_tree[tree_id]
        size = len(nodes)
        if sorted(nodes) != list(range(size)):
            raise ExportError(f"{stage}: tree {tree_id} has node ids that are not 0..{size - 1}")
        feature, threshold, left, right, value = [], [], [], [], []
        categories: dict[str, list[float]] = {}
        for node_id in range(size):
            node = nodes[node_id]
            value.append(_finite(node["prediction"], f"tree {tree_id} node {node_id} prediction"))
            if node["leftChild"] < 0:
                feature.append(-1)
                threshold.append(0.0)
                left.append(-1)
                right.append(-1)
                continue
            split = node["split"]
            index = int(split["featureIndex"])
            children = (int(node["leftChild"]), int(node["rightChild"]))
            if not 0 <= index < num_features or not all(0 < child < size for child in children):
                raise ExportError(f"{stage}: tree {tree_id} node {node_id} has an invalid split or children")
            feature.append(index)
            left.append(children[0])
            right.append(children[1])
            if int(split["numCategories"]) < 0:
                (cut,) = split["leftCategoriesOrThreshold"]
                threshold.append(_finite(cut, f"tree {tree_id} node {node_id} threshold"))
            else:
                threshold.append(0.0)
                categories[str(node_id)] = [float(c) for c in split["leftCategoriesOrThreshold"]]
        tree: dict[str, Any] = {
            "feature": feature,
            "threshold": threshold,
            "left": left,
            "right": right,
            "value": value,
        }
        if categories:
            tree["left_categories"] = categories
        trees.append(tree)
    return trees


def _tree_weights(stage: Path, num_trees: int) -> list[float]:
    rows = _read_table(stage / "treesMetadata")
    # columns are (treeID, metadata, weights): named so in Spark 3, _1.._3 in Spark 4; read by position
    weights: dict[int, float] = {}
    for row in rows:
        tree_id, _meta, weight = list(row.values())[:3]
        weights[int(tree_id)] = _finite(weight, f"tree {tree_id} weight")
    if sorted(weights) != list(range(num_trees)):
        raise ExportError(f"{stage}: tree weights for {len(weights)} trees, expected {num_trees}")
    return [weights[i] for i in range(num_trees)]


def _linear(stage: Path, num_features: int) -> dict[str, Any]:
    rows = _read_table(stage / "data")
    if len(rows) != 1:
        raise ExportError(f"{stage}: expected one row of linear model data, found {len(rows)}")
    row = rows[0]
    vector = row["coefficients"]
    if int(vector["type"]) == 1:  # dense
        coefficients = [float(v) for v in vector["values"]]
    else:  # sparse
        coefficients = [0.0] * int(vector["size"])
        for index, value in zip(vector["indices"], vector["values"], strict=True):
            coefficients[int(index)] = float(value)
    if len(coefficients) != num_features:
        raise ExportError(f"{stage}: {len(coefficients)} coefficients for {num_features} features")
    return {
        "intercept": _finite(row["intercept"], "intercept"),
        "coefficients": [_finite(c, "a coefficient") for c in coefficients],
    }


def _xgboost(stage: Path, metadata: Mapping[str, Any], num_features: int) -> dict[str, Any]:
    """A SparkXGBRegressorModel stage: XGBoost's JSON model, its lines joined back as xgboost.spark's reader does."""
    if "serialized_callbacks" in metadata or "init_booster" in metadata:
        raise ExportError(f"{stage}: the model's metadata carries pickled callbacks or a start booster; not exported")
    missing, sparse = _param(metadata, "missing"), _param(metadata, "enable_sparse_data_optim")
    if not (isinstance(missing, float) and math.isnan(missing)) or sparse:
        raise ExportError(f"{stage}: missing={missing}, enable_sparse_data_optim={sparse}; only NaN as missing exports")
    parts = sorted((stage / "model").glob("part-*"))
    if not parts:
        raise ExportError(f"{stage}: no XGBoost model (model/part-*)")
    text = "".join(part.read_text(encoding="utf-8").replace("\r", "").replace("\n", "") for part in parts)
    try:
        booster = read_booster_json(text, num_features)
    except XGBoostModelError as exc:
        raise ExportError(f"{stage}: {exc}") from None
    trees = booster["trees"]
    return {
        "trees": trees,
        "tree_weights": [1.0] * len(trees),
        "tree_combine": "sum_float32",  # base_score + leaves, added in float32 in tree order
        "base_score": booster["base_score"],
        "objective": booster["objective"],
    }


def read_pipeline(model_dir: str | Path) -> dict[str, Any]:
    """The exportable content of a saved feature -> assembler -> regressor PipelineModel (no model name yet)."""
    pipeline = _pipeline_folder(Path(model_dir))
    top = _read_metadata(pipeline)
    if top.get("class") not in PIPELINE_CLASSES:
        raise ExportError(f"{pipeline}: a {top.get('class')}, not a PipelineModel")
    uids = list(_param(top, "stageUids") or [])
    stages = _stage_folders(pipeline, uids)
    metas = [_read_metadata(stage) for stage in stages]
    classes = [meta.get("class") for meta in metas]
    if len(metas) != 3 or classes[0] != SQL_CLASS or classes[1] != ASSEMBLER_CLASS or classes[2] not in KINDS:
        raise ExportError(
            f"{pipeline}: stages {classes}; expected SQLTransformer -> VectorAssembler -> "
            "GBTRegressionModel | RandomForestRegressionModel | LinearRegressionModel | SparkXGBRegressorModel"
        )
    sql_meta, assembler_meta, model_meta = metas
    statement = str(_param(sql_meta, "statement"))
    travel_times = travel_times_in(statement)
    if statement != feature_sql(travel_times):
        raise ExportError(
            f"{pipeline}: its feature SQL differs from this code version's features.definitions; "
            "export it with the version of taxi_duration that trained it"
        )
    columns = [str(c) for c in _param(assembler_meta, "inputCols") or []]
    unknown = [c for c in columns if c not in FEATURE_COLUMNS]
    if not columns or unknown:
        raise ExportError(f"{pipeline}: the assembler's input columns {unknown or columns} are not known features")
    handle_invalid = _param(assembler_meta, "handleInvalid")
    if handle_invalid != "keep":
        raise ExportError(f"{pipeline}: VectorAssembler handleInvalid={handle_invalid!r}; only 'keep' is supported")
    if _param(assembler_meta, "outputCol") != _param(model_meta, "featuresCol"):
        raise ExportError(f"{pipeline}: the regressor does not read the assembler's output column")

    kind = KINDS[str(classes[2])]
    content: dict[str, Any] = {
        "kind": kind,
        "estimator_class": classes[2],
        "estimator_uid": model_meta.get("uid"),
        "spark_version": model_meta.get("sparkVersion"),
        "estimator_params": model_meta.get("paramMap", {}),
        "feature_columns": columns,
        "handle_invalid": handle_invalid,
    }
    if kind == "linear":
        content["linear"] = _linear(stages[2], len(columns))
    elif kind == "xgboost":
        content.update(_xgboost(stages[2], model_meta, len(columns)))
        content["max_depth"] = max(_depth(tree) for tree in content["trees"])
    else:
        trees = _trees(stages[2], len(columns))
        num_trees = model_meta.get("numTrees", len(trees))
        if num_trees != len(trees):
            raise ExportError(f"{stages[2]}: metadata says {num_trees} trees, data holds {len(trees)}")
        content["trees"] = trees
        # GBT: sum of weight * tree (weights 1, stepSize, stepSize, ...); RF: mean of the trees (weights all 1)
        content["tree_weights"] = _tree_weights(stages[2], len(trees)) if kind == "gbt" else [1.0] * len(trees)
        content["tree_combine"] = "sum" if kind == "gbt" else "mean"
        content["max_depth"] = max(_depth(tree) for tree in trees)
    content["feature_sql_sha256"] = hashlib.sha256(statement.encode("utf-8")).hexdigest()
    # the statement embeds the travel-time table; it is stored once, as data, and the statement is rebuilt from it
    content["travel_times"] = travel_times.to_json() if travel_times else None
    return content


def _depth(tree: Mapping[str, list[int]]) -> int:
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if tree["feature"][node] >= 0:
            stack.append((tree["left"][node], depth + 1))
            stack.append((tree["right"][node], depth + 1))
    return deepest


def export_model(
    model_dir: str | Path,
    out_dir: Path,
    model_name: str,
    model_version: str,
    metrics: dict | None = None,
    metrics_by_regime: dict | None = None,
) -> Path:
    """Export a saved PipelineModel folder to `out_dir/model.json`; returns `out_dir`.

    Reads only files (JSON metadata and Parquet with pyarrow): no Spark session, no JVM."""
    content = read_pipeline(model_dir)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": str(model_name),
        "model_version": str(model_version),
        "metrics": {str(k): v for k, v in (metrics or {}).items()},
        "metrics_by_regime": metrics_by_regime or {},
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(Path(model_dir).resolve()),
        "label": "ln(duration_s)",
        "output": "duration_minutes = exp(prediction) / 60",
        **content,
        "feature_tables": FeatureTables.from_definitions().to_json(),
    }
    try:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN metric: JSON has no NaN
        document["metrics"] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in document["metrics"].items()
        }
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MODEL_FILE
    partial = target.with_suffix(".json.partial")
    partial.write_text(text + "\n", encoding="utf-8")
    partial.replace(target)  # readers never see half a file
    return out_dir


def log_exported_model(
    model_uri: str,
    model_name: str,
    version: str,
    metrics: dict[str, float],
    by_regime: dict[str, dict[str, float]],
    *,
    pyfunc: bool = True,
) -> None:
    """Log the JVM-free form of the model (trees/coefficients as JSON) with the active run: what the API serves;
    with `pyfunc`, also as an MLflow pyfunc model (`PYFUNC_ARTIFACT`).

    Read from the logged MLflow artifact, not from the live model, so it works wherever the artifact store is."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
        exported = export_model(
            local, Path(tmp) / EXPORTED_ARTIFACT, model_name, version, metrics, metrics_by_regime=by_regime
        )
        mlflow.log_artifacts(str(exported), EXPORTED_ARTIFACT)
        if pyfunc:
            log_exported_pyfunc(exported, PYFUNC_ARTIFACT)
