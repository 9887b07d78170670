"""Before a version is registered: load back every form the run logged and predict real trips with each."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.tracking import MlflowClient
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.errors import TaxiDurationError
from taxi_duration.features.definitions import FEATURE_INPUT_COLUMNS
from taxi_duration.registry.spark_model import load_spark_model
from taxi_duration.serve.champion import EXPORTED_ARTIFACT
from taxi_duration.serve.export import PYFUNC_ARTIFACT
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.train.evaluate import PREDICTED_MINUTES, predict_minutes
from taxi_duration.train.run_log import PLOT_FILES

CHECK_ROWS = 200  # validation trips predicted by each logged form before the version is registered
CHECK_TOLERANCE_MINUTES = 1e-6


class TrainCheckError(TaxiDurationError):
    """A logged model that does not load back or predicts differently: nothing is registered."""

    exit_code = 3


def check_loadable(client: MlflowClient, run_id: str, model_uri: str, model: PipelineModel, valid: DataFrame) -> None:
    """Load back what was logged (Spark model, exported model, pyfunc, plots) and predict real trips with each:
    a version is registered only if every form serves, and serves the same minutes as the model just fitted."""
    ids = [row["trip_id"] for row in valid.select("trip_id").limit(CHECK_ROWS).collect()]
    sample = valid.filter(F.col("trip_id").isin(ids))
    expected = predict_minutes(model, sample).select("trip_id", PREDICTED_MINUTES).toPandas()
    reloaded = predict_minutes(load_spark_model(model_uri, valid.sparkSession), sample)
    got = reloaded.select("trip_id", PREDICTED_MINUTES).toPandas()
    _same_minutes("the logged Spark model", expected, got)
    trips = sample.select(*FEATURE_INPUT_COLUMNS, "trip_id").toPandas()
    with tempfile.TemporaryDirectory() as tmp:
        folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{EXPORTED_ARTIFACT}", dst_path=tmp)
        exported = ExportedModel.load(folder)
        _same_minutes(
            "the exported model", expected, trips.assign(**{PREDICTED_MINUTES: exported.predict_batch(trips)})
        )
        pyfunc_uri = _logged_model_uri(client, run_id, PYFUNC_ARTIFACT)
        (Path(tmp) / "pyfunc").mkdir()
        saved_path = list(sys.path)  # loading puts the model's code folder (a copy of this package) first
        try:
            pyfunc = mlflow.pyfunc.load_model(pyfunc_uri, dst_path=str(Path(tmp) / "pyfunc"))
            minutes = pyfunc.predict(trips[list(FEATURE_INPUT_COLUMNS)])
        finally:
            sys.path[:] = saved_path
        _same_minutes("the pyfunc model", expected, trips.assign(**{PREDICTED_MINUTES: minutes}))
    logged = {a.path for a in client.list_artifacts(run_id, "plots")}
    missing = sorted({f"plots/{name}" for name in PLOT_FILES} - logged)
    if missing:
        raise TrainCheckError(f"run {run_id}: plots not logged: {', '.join(missing)}")


def _same_minutes(what: str, expected: pd.DataFrame, got: pd.DataFrame) -> None:
    joined = expected.merge(got[["trip_id", PREDICTED_MINUTES]], on="trip_id", suffixes=("", "_got"))
    if len(joined) != len(expected):
        raise TrainCheckError(f"{what}: predicted {len(joined)} of {len(expected)} check trips")
    gap = (joined[PREDICTED_MINUTES] - joined[f"{PREDICTED_MINUTES}_got"]).abs().max()
    if len(joined) and not gap <= CHECK_TOLERANCE_MINUTES:
        raise TrainCheckError(f"{what} predicts up to {gap:.3g} minutes away from the fitted model")


def _logged_model_uri(client: MlflowClient, run_id: str, name: str) -> str:
    """The URI of the model logged under `name` in the run (MLflow 3 logs models outside the run's folder)."""
    experiment_id = client.get_run(run_id).info.experiment_id
    for logged in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        if logged.name == name:
            return f"models:/{logged.model_id}"
    raise TrainCheckError(f"run {run_id}: no logged model named {name}")
