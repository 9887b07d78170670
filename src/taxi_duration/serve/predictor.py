"""Serve an exported model (`model.json`) in plain Python: one trip in microseconds, batches with NumPy.

One trip: the trees compiled into one function of nested `if`s (`compiled_trees.py`); ensembles too large to
compile become nested tuples `(feature, threshold, left, right)` with leaves `(-1, weighted value, None, None)`,
walked. `x <= threshold` is False for NaN: a NULL feature goes right, as in Spark. The MLflow wrapper logs the
same folder as a pyfunc model (models from code: nothing pickled) that loads without Spark.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from taxi_duration.errors import TaxiDurationError
from taxi_duration.features.definitions import FEATURE_COLUMNS
from taxi_duration.features.travel_times import TravelTimes
from taxi_duration.regimes import Regime, regime_of
from taxi_duration.serve.compiled_trees import TreeArrays, compile_trees
from taxi_duration.serve.feature_tables import FeatureTables
from taxi_duration.serve.online_features import batch_features, trip_features
from taxi_duration.serve.xgboost_trees import scorers as xgboost_scorers

MODEL_FILE = "model.json"
FORMAT = "taxi-duration-exported-model"
SUPPORTED_FORMAT_VERSIONS = (1,)
ARTIFACT_KEY = "exported_model"

Node = tuple[int, float, Any, Any]


class ExportedModelError(TaxiDurationError, ValueError):
    """An exported model folder that cannot be served (missing, not ours, a newer format, inconsistent)."""


def _nested(tree: Mapping[str, Any], node: int, weight: float) -> Node:
    feature = int(tree["feature"][node])
    if feature < 0:
        return (-1, weight * float(tree["value"][node]), None, None)
    return (
        feature,
        float(tree["threshold"][node]),
        _nested(tree, int(tree["left"][node]), weight),
        _nested(tree, int(tree["right"][node]), weight),
    )


class _BatchTree(TreeArrays):
    """An MLlib tree (GBT, RF) as arrays, with its weighted leaf values and categorical splits."""

    def __init__(self, tree: Mapping[str, Any], weight: float) -> None:
        super().__init__(tree)
        self.value = weight * np.asarray(tree["value"], dtype=np.float64)
        self.categories = {int(k): np.asarray(v, dtype=np.float64) for k, v in tree.get("left_categories", {}).items()}

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        rows = np.arange(matrix.shape[0])
        index = np.zeros(matrix.shape[0], dtype=np.int64)
        for _ in range(self.depth):
            values = matrix[rows, self.feature[index]]
            go_left = values <= self.threshold[index]
            for node, categories in self.categories.items():
                at_node = index == node
                if at_node.any():
                    go_left[at_node] = np.isin(values[at_node], categories)
            index = np.where(go_left, self.left[index], self.right[index])
        return self.value[index]


class ExportedModel:
    """A model exported by `serve.export.export_model`, scored without Spark.

    Output is what the Spark pipeline gives: `exp(prediction) / 60` minutes, `prediction` being ln(seconds)."""

    def __init__(self, document: Mapping[str, Any], path: Path | None = None) -> None:
        if document.get("format") != FORMAT:
            raise ExportedModelError(f"{path or 'document'}: not an exported taxi-duration model")
        if document.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
            raise ExportedModelError(
                f"{path or 'document'}: format version {document.get('format_version')} is not one of "
                f"{SUPPORTED_FORMAT_VERSIONS}; upgrade taxi_duration"
            )
        self.path = path
        self.name = str(document["model_name"])
        self.version = str(document["model_version"])
        self.kind = str(document["kind"])
        self.metrics: dict[str, Any] = dict(document.get("metrics") or {})
        self.metrics_by_regime: dict[str, Any] = dict(document.get("metrics_by_regime") or {})
        self.feature_columns: tuple[str, ...] = tuple(document["feature_columns"])
        self.feature_sql_sha256 = str(document.get("feature_sql_sha256", ""))
        self.spark_version = str(document.get("spark_version", ""))
        self.exported_at = str(document.get("exported_at", ""))
        unknown = [c for c in self.feature_columns if c not in FEATURE_COLUMNS]
        if unknown:
            raise ExportedModelError(f"{path or 'document'}: unknown feature columns {unknown}")
        try:
            stored = document.get("travel_times")
            travel_times = TravelTimes.from_json(stored) if stored else None
            self._tables = FeatureTables.from_json(document["feature_tables"], travel_times)
        except ValueError as exc:
            raise ExportedModelError(f"{path or 'document'}: {exc}") from None
        self._index = [FEATURE_COLUMNS.index(c) for c in self.feature_columns]
        self._identity = self._index == list(range(len(FEATURE_COLUMNS)))
        self._score: Callable[[Sequence[float]], float]
        self._score_matrix: Callable[[np.ndarray], np.ndarray]
        if self.kind == "linear":
            self._init_linear(document["linear"])
        elif self.kind in ("gbt", "rf"):
            self._init_trees(document)
        elif self.kind == "xgboost":  # float32 sums, NaN to each node's side (xgboost_trees)
            try:
                scored = xgboost_scorers(document["trees"], float(document["base_score"]), len(self._index))
            except ValueError as exc:
                raise ExportedModelError(f"{path or 'document'}: {exc}") from None
            self._score, self._score_matrix = scored
        else:
            raise ExportedModelError(f"{path or 'document'}: unknown model kind {self.kind!r}")

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, folder: str | Path) -> ExportedModel:
        """Load `folder/model.json` (or the file itself); JSON only, nothing is unpickled."""
        path = Path(folder)
        file = path if path.is_file() else path / MODEL_FILE
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ExportedModelError(
                f"{file}: cannot read it ({exc.strerror}); expected an exported model: a folder holding {MODEL_FILE} "
                "(the `exported/` artifact of a `taxi-duration train` run) or that file"
            ) from None
        except json.JSONDecodeError as exc:
            raise ExportedModelError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(document, dict):
            raise ExportedModelError(f"{file}: expected a JSON object")
        try:
            return cls(document, path=file.parent)
        except (KeyError, TypeError, IndexError) as exc:
            raise ExportedModelError(f"{file}: inconsistent exported model ({exc.__class__.__name__}: {exc})") from None

    def _init_linear(self, linear: Mapping[str, Any]) -> None:
        coefficients = tuple(float(c) for c in linear["coefficients"])
        intercept = float(linear["intercept"])
        if len(coefficients) != len(self.feature_columns):
            raise ExportedModelError(f"{len(coefficients)} coefficients for {len(self.feature_columns)} features")
        vector = np.asarray(coefficients, dtype=np.float64)

        def score(x: Sequence[float]) -> float:
            total = 0.0
            for c, v in zip(coefficients, x, strict=True):
                total += c * v
            return total + intercept

        def score_matrix(matrix: np.ndarray) -> np.ndarray:
            return matrix @ vector + intercept

        self._score, self._score_matrix = score, score_matrix

    def _init_trees(self, document: Mapping[str, Any]) -> None:
        trees = document["trees"]
        weights = [float(w) for w in document["tree_weights"]]
        if len(weights) != len(trees) or not trees:
            raise ExportedModelError(f"{len(trees)} trees and {len(weights)} tree weights")
        mean = document.get("tree_combine") == "mean"
        divisor = float(len(trees))
        batch = [_BatchTree(tree, weight) for tree, weight in zip(trees, weights, strict=True)]
        categorical = any(tree.get("left_categories") for tree in trees)

        def score_matrix(matrix: np.ndarray) -> np.ndarray:
            total = np.zeros(matrix.shape[0])
            for tree in batch:
                total += tree.predict(matrix)
            return total / divisor if mean else total

        self._score_matrix = score_matrix
        if categorical:
            single = self._general_score(trees, weights)
            self._score = (lambda x: single(x) / divisor) if mean else single
            return
        compiled = compile_trees(trees, weights, len(self.feature_columns))
        if compiled is not None:
            self._score = (lambda x: compiled(x) / divisor) if mean else compiled
            return
        roots = tuple(_nested(tree, 0, weight) for tree, weight in zip(trees, weights, strict=True))

        def score_sum(x: Sequence[float]) -> float:
            total = 0.0
            for root in roots:
                f, t, left, right = root
                while f >= 0:
                    f, t, left, right = left if x[f] <= t else right
                total += t
            return total

        def score_mean(x: Sequence[float]) -> float:
            return score_sum(x) / divisor

        self._score = score_mean if mean else score_sum

    @staticmethod
    def _general_score(
        trees: Sequence[Mapping[str, Any]], weights: Sequence[float]
    ) -> Callable[[Sequence[float]], float]:
        """Trees with categorical splits (not produced by this pipeline's numeric assembler, handled anyway)."""
        flat = [
            (
                tree["feature"],
                tree["threshold"],
                tree["left"],
                tree["right"],
                tree["value"],
                {int(k): frozenset(v) for k, v in tree.get("left_categories", {}).items()},
                weight,
            )
            for tree, weight in zip(trees, weights, strict=True)
        ]

        def score(x: Sequence[float]) -> float:
            total = 0.0
            for feature, threshold, left, right, value, categories, weight in flat:
                node = 0
                while feature[node] >= 0:
                    v = x[feature[node]]
                    cats = categories.get(node)
                    go_left = v in cats if cats is not None else v <= threshold[node]
                    node = left[node] if go_left else right[node]
                total += weight * value[node]
            return total

        return score

    # ------------------------------------------------------------------------------------------ scoring

    def features(self, trip: Mapping[str, Any]) -> list[float]:
        """The model's input vector for one trip (its assembler's column order, NaN for NULL)."""
        full = trip_features(trip, self._tables)
        return full if self._identity else [full[i] for i in self._index]

    def predict_log_seconds(self, trip: Mapping[str, Any]) -> float:
        """The raw model output for one trip: ln(duration in seconds)."""
        return self._score(self.features(trip))

    @staticmethod
    def regime(trip: Mapping[str, Any]) -> Regime:
        """Which of the three regimes a trip is scored in (what the request gave: `regimes.regime_of`)."""
        return regime_of(trip)

    def predict_minutes(self, trip: Mapping[str, Any]) -> float:
        """Predicted duration in minutes for one canonical trip (a mapping of canonical column -> value)."""
        full = trip_features(trip, self._tables)
        return math.exp(self._score(full if self._identity else [full[i] for i in self._index])) / 60.0

    def feature_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's input matrix for a DataFrame of canonical trips."""
        matrix = batch_features(frame, self._tables)
        return matrix if self._identity else matrix[:, self._index]

    def predict_batch(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted minutes for each row of a DataFrame of canonical trips (missing columns are NULL)."""
        if len(frame) == 0:
            return np.zeros(0, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.exp(self._score_matrix(self.feature_matrix(frame))) / 60.0

    def info(self) -> dict[str, Any]:
        """What `/model` shows: name, version, kind, metrics, features."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "kind": self.kind,
            "metrics": self.metrics,
            "metrics_by_regime": self.metrics_by_regime,
            "features": list(self.feature_columns),
            "spark_version": self.spark_version,
            "exported_at": self.exported_at,
            "feature_sql_sha256": self.feature_sql_sha256,
        }


# ---------------------------------------------------------------------------------------------- MLflow


class ExportedModelPyfunc(PythonModel):
    """MLflow pyfunc over an exported folder (artifact `exported_model`): DataFrame of canonical trips in,
    predicted minutes out. Needs numpy and pandas, not Spark or a JVM."""

    def __init__(self) -> None:
        self.model: ExportedModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = ExportedModel.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        if self.model is None:
            self.load_context(context)
        assert self.model is not None
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.model.predict_batch(frame)


_CODE_FILE = '''"""MLflow models-from-code entry point: the JVM-free exported taxi-duration model (nothing pickled)."""

import mlflow

from taxi_duration.serve.predictor import ExportedModelPyfunc

mlflow.models.set_model(ExportedModelPyfunc())
'''

# what `import taxi_duration.serve.predictor` needs (the MLflow client, the scorer's arrays, the holiday calendar of
# the features): no pyspark, no JVM (checked by the import contract in CI), no pyarrow (the model is JSON; the
# serving install runs without it, tests/test_serving_install.py)
_REQUIREMENTS = ("mlflow-skinny", "numpy", "pandas", "holidays")


def serving_requirements() -> list[str]:
    """Pinned pip requirements of the pyfunc model, from this environment."""
    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = [ColSpec("datetime", "pickup_datetime", required=False)]
    # zone ids as double: a coordinates-only row has NaN there, which an integer column cannot hold
    inputs += [ColSpec("double", name, required=False) for name in ("pickup_location_id", "dropoff_location_id")]
    inputs += [
        ColSpec("double", name, required=False)
        for name in ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude", "trip_distance")
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "duration_minutes")]))


def _package_folder(tmp: Path) -> Path:
    """The taxi_duration package as a folder MLflow can copy; extracted into `tmp` when it was imported from
    a wheel or zip (spark-submit --py-files), where there is no folder to copy."""
    package = Path(__file__).resolve().parents[1]
    if package.is_dir():
        return package
    import zipfile

    import taxi_duration

    archive = getattr(taxi_duration.__loader__, "archive", None)
    if archive is None:
        raise RuntimeError(f"taxi_duration is neither a folder nor in a zip archive: {package}")
    with zipfile.ZipFile(archive) as zipped:
        members = [name for name in zipped.namelist() if name.startswith("taxi_duration/")]
        zipped.extractall(tmp / "code", members)
    return tmp / "code" / "taxi_duration"


def log_exported_pyfunc(export_dir: Path, artifact_path: str = "exported_model") -> Any:
    """Log an exported folder as an MLflow pyfunc model in the active run; returns MLflow's ModelInfo.

    Models from code (a generated entry file), the taxi_duration package as code, pip requirements given."""
    model = ExportedModel.load(export_dir)  # fail here, not when someone loads it
    with tempfile.TemporaryDirectory() as tmp:
        package = _package_folder(Path(tmp))
        entry = Path(tmp) / "taxi_duration_exported_model.py"
        entry.write_text(_CODE_FILE, encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=str(entry),
            artifacts={ARTIFACT_KEY: str(Path(export_dir).resolve())},
            code_paths=[str(package)],
            pip_requirements=serving_requirements(),
            signature=_signature(),
            input_example=pd.DataFrame(
                {
                    "pickup_datetime": [pd.Timestamp("2024-05-01 08:30:00")],
                    "pickup_location_id": [161.0],
                    "dropoff_location_id": [236.0],
                    "trip_distance": [2.4],
                }
            ),
            metadata={"model_name": model.name, "model_version": model.version, "kind": model.kind},
        )
