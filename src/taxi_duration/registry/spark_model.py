"""Log and load the Spark PipelineModel with MLflow in classic mode and under Spark Connect alike.

`mlflow.spark.log_model`/`load_model` copy the model through Hadoop's FileSystem via the py4j gateway, which
a Spark Connect client (Databricks Connect, serverless) does not have. Under Connect the model is saved by the
session itself into the MLflow DFS temp folder (`MLFLOW_DFS_TMP`, inside the workspace by default) and logged
from there as an ordinary MLflow Spark-flavour model (`MLmodel` + `sparkml/`), so both modes produce the same
artifact, `mlflow.spark.load_model` can load either in classic mode, and the JVM-free exporter reads either.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.spark
import yaml
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, Schema
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from taxi_duration.columns import PREDICTION
from taxi_duration.errors import TaxiDurationError
from taxi_duration.features.definitions import FEATURE_INPUT_COLUMNS
from taxi_duration.schema import TRIP_SCHEMA

SPARKML = "sparkml"  # the sub-folder mlflow.spark uses for the saved PipelineModel


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def pip_requirements() -> list[str]:
    """What the logged Spark model needs, given explicitly (inferring it starts a second JVM)."""
    import pyspark

    return [f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"]


def spark_model_signature() -> ModelSignature:
    """What the logged PipelineModel reads (the canonical columns its feature SQL uses) and returns (`prediction`,
    ln of the duration in seconds). Unity Catalog refuses to register a model without one."""
    types = {field.name: field.dataType.typeName() for field in TRIP_SCHEMA.fields}
    mlflow_type = {"timestamp": "datetime", "integer": "integer", "double": "double"}
    inputs = Schema([ColSpec(mlflow_type[types[name]], name, required=False) for name in FEATURE_INPUT_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", PREDICTION)]))


def _transfer_dir() -> Path:
    """A folder both this client and the Spark driver see: MLFLOW_DFS_TMP (set by configure_mlflow)."""
    root = Path(os.environ.get("MLFLOW_DFS_TMP") or tempfile.gettempdir()).resolve()
    path = root / f"taxi-duration-{uuid.uuid4().hex}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_mlmodel(folder: Path) -> None:
    """The MLmodel, requirements and environment files mlflow.spark writes, from MLflow's public API."""
    import pyspark

    model = Model(signature=spark_model_signature())
    mlflow.pyfunc.add_to_model(model, loader_module="mlflow.spark", data=SPARKML, python_env="python_env.yaml")
    model.add_flavor("spark", pyspark_version=pyspark.__version__, model_data=SPARKML, code=None)
    model.save(str(folder / "MLmodel"))
    requirements = pip_requirements()
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    version = ".".join(map(str, sys.version_info[:3]))
    env = {"python": version, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]}
    (folder / "python_env.yaml").write_text(yaml.safe_dump(env, sort_keys=False))


def log_spark_model(model: PipelineModel, spark: SparkSession, artifact_path: str = "model") -> str:
    """Log `model` to the active MLflow run; return its model URI."""
    if not is_connect(spark):
        info = mlflow.spark.log_model(
            model, artifact_path, pip_requirements=pip_requirements(), signature=spark_model_signature()
        )
        return str(info.model_uri)
    run = mlflow.active_run()
    if run is None:
        raise TaxiDurationError("log_spark_model needs an active MLflow run")
    folder = _transfer_dir()
    try:
        model.write().overwrite().save(str(folder / SPARKML))  # written by the Connect server
        if not (folder / SPARKML / "metadata").is_dir():
            raise TaxiDurationError(
                f"the Spark Connect server saved the model to {folder / SPARKML}, which this client cannot see; "
                "set MLFLOW_DFS_TMP to a folder shared by the client and the server (e.g. a Unity Catalog volume)"
            )
        _write_mlmodel(folder)
        mlflow.log_artifacts(str(folder), artifact_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return f"runs:/{run.info.run_id}/{artifact_path}"


# xgboost.spark's reader unpickles (cloudpickle) the callbacks its writer put in a stage's metadata; this project
# never sets callbacks, so a model carrying them was not written by it and is not loaded
PICKLED_METADATA_KEYS = ("serialized_callbacks",)


def _stage_metadata(pipeline: Path) -> list[dict]:
    """Every line of the stages' metadata files, parsed as the readers parse them (JSON: a key spelt with escapes
    is the same key)."""
    found = []
    for part in sorted(pipeline.glob("stages/*/metadata/part-*")):
        for line in part.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise TaxiDurationError(f"{part}: stage metadata that is not a JSON object; not loaded")
            found.append(data)
    return found


def refuse_pickled_stages(pipeline: Path) -> None:
    """Raise if a stage's metadata of the saved PipelineModel at `pipeline` holds something its reader unpickles."""
    for metadata in _stage_metadata(pipeline):
        found = [key for key in PICKLED_METADATA_KEYS if key in metadata]
        if found:
            raise TaxiDurationError(
                f"{pipeline}: the metadata of stage {metadata.get('uid')} carries {', '.join(found)} (pickled "
                "Python objects); not loaded: this project loads no pickles"
            )


def load_spark_model(model_uri: str, spark: SparkSession) -> PipelineModel:
    """Load a logged Spark model (either kind of log above) as a PipelineModel for this session; the files are
    downloaded and checked first (`refuse_pickled_stages`)."""
    folder = _transfer_dir()
    # stays until the workspace tmp is cleaned: Spark may read model data lazily while the session lives
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder)))
    refuse_pickled_stages(local / SPARKML)
    if not is_connect(spark):
        return mlflow.spark.load_model(str(local))
    if any(
        str(metadata.get("class", "")).startswith("xgboost.spark.") for metadata in _stage_metadata(local / SPARKML)
    ):
        raise TaxiDurationError(
            f"{model_uri} is an XGBoost model: xgboost.spark loads and scores it through the SparkContext, which a "
            "Spark Connect client does not have; use a classic session (or register a gbt model)"
        )
    return PipelineModel.load(str((local / SPARKML).resolve()))
