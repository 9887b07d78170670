"""`train --model xgboost` on the real TLC sample through the CLI: XGBoost's Spark estimator fitted, evaluated like
the other kinds (RMSLE, per regime, the zone-pair baseline), logged, checked (the Spark model loads back, the
export gives its minutes to 1e-6), registered and compared with a GBT champion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from conftest import cli_json, copy_workspace
from taxi_duration.errors import ConfigError
from taxi_duration.train.pipeline import build_pipeline, param_grid, refuse_on_connect

pytestmark = pytest.mark.slow
SMALL_XGBOOST = "train:\n  xgboost: {n_estimators: 30, max_depth: 6, learning_rate: 0.2}\n"


def test_xgboost_pipeline_and_classic_session(spark: SparkSession) -> None:
    from taxi_duration.params import TrainParams

    params = TrainParams(
        xgboost={"n_estimators": 7, "max_depth": 3}, seed=5, tune={"grid": {"xgboost": {"max_depth": [3, 5]}}}
    )
    pipeline = build_pipeline("xgboost", params)
    estimator = pipeline.getStages()[-1]
    assert [{p.name: v for p, v in point.items()} for point in param_grid(pipeline, "xgboost", params)] == [
        {"max_depth": 3},
        {"max_depth": 5},
    ]
    assert type(estimator).__name__ == "SparkXGBRegressor"
    values = {p.name: v for p, v in estimator.extractParamMap().items()}
    assert (values["n_estimators"], values["max_depth"], values["random_state"]) == (7, 3, 5)
    assert values["num_workers"] == spark.sparkContext.defaultParallelism == 2  # one barrier task per core
    assert math.isnan(values["missing"]) and values["verbose"] is False
    refuse_on_connect("xgboost", spark)  # a classic session: no refusal
    with pytest.raises(ConfigError, match="--model xgboost needs the xgboost package"):
        import sys

        saved = sys.modules.get("xgboost.spark")
        sys.modules["xgboost.spark"] = None  # type: ignore[assignment]  # as if the package were not installed
        try:
            build_pipeline("xgboost", params)
        finally:
            if saved is not None:
                sys.modules["xgboost.spark"] = saved


def test_train_xgboost_on_the_real_sample(sample_champion: Path, tmp_path: Path) -> None:
    workspace = copy_workspace(sample_champion, tmp_path / "workspace")
    (workspace / "xgboost.yaml").write_text(SMALL_XGBOOST, encoding="utf-8")
    result = cli_json(workspace, "train", "--model", "xgboost", config=workspace / "xgboost.yaml")
    assert (result["model_kind"], result["model_version"]) == ("xgboost", "2")
    metrics, baseline = result["metrics"], result["baseline_metrics"]
    assert 0 < metrics["rmsle"] < baseline["rmsle"] and math.isfinite(metrics["rmse_minutes"])
    assert metrics["rows"] == baseline["rows"] == result["data"]["validation_rows"] > 1000
    regimes = result["metrics_by_regime"]
    assert set(regimes) == {"recorded_distance", "zones_only", "coordinates_only"}
    assert regimes["recorded_distance"]["rmsle"] == pytest.approx(metrics["rmsle"], rel=1e-12)
    for regime in ("zones_only", "coordinates_only"):
        assert 0 < regimes[regime]["rmsle"] < regimes[regime]["baseline_rmsle"], regime
        assert regimes[regime]["rows"] > 500
    # compared with the GBT champion (version 1) on the same validation trips, in every regime
    decision = result["promotion"]
    assert decision["champion_version"] == "1" and decision["challenger"] == pytest.approx(metrics["rmsle"])
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    run = client.get_run(result["run_id"]).data
    assert run.tags["model_kind"] == "xgboost" and run.params["estimator_n_estimators"] == "30"
    assert run.metrics["zones_only_rmsle"] == pytest.approx(regimes["zones_only"]["rmsle"])
    assert {a.path for a in client.list_artifacts(result["run_id"])} >= {"exported", "model"}


def test_train_xgboost_with_tuning(sample_ingested: Path, tmp_path: Path) -> None:
    workspace = copy_workspace(sample_ingested, tmp_path / "workspace")
    grid = (
        "train:\n  xgboost: {n_estimators: 5, learning_rate: 0.3}\n"
        "  tune: {parallelism: 2, grid: {xgboost: {max_depth: [2, 4], learning_rate: [0.3]}}}\n"
    )
    (workspace / "tune.yaml").write_text(grid, encoding="utf-8")
    # parallelism 2 is run one point at a time for xgboost: two barrier fits would each wait for every slot
    result = cli_json(workspace, "train", "--model", "xgboost", "--tune", config=workspace / "tune.yaml")
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    tuning = json.loads(Path(client.download_artifacts(result["run_id"], "tuning.json", str(tmp_path))).read_text())
    assert tuning["grid_size"] == 2 and tuning["best_params"]["max_depth"] in (2, 4)
    assert 0 < tuning["best_log_rmse"] < 1
    run = client.get_run(result["run_id"]).data
    assert run.params["estimator_max_depth"] == str(tuning["best_params"]["max_depth"])
    assert result["metrics"]["rmsle"] < result["baseline_metrics"]["rmsle"]
