"""`train --tune`: a parameter grid searched with TrainValidationSplit and with CrossValidator on the real sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from taxi_duration import cli
from taxi_duration.params import load_params

pytestmark = pytest.mark.slow

SMALL_GRID = """
train:
  gbt: {maxIter: 3, maxDepth: 3}
  tune:
    method: %s
    num_folds: 2
    parallelism: 2
    grid:
      gbt: {maxDepth: [2, 3], stepSize: [0.3]}
"""


@pytest.mark.parametrize("method", ["train_validation_split", "cross_validator"])
def test_tune_searches_the_grid_and_logs_the_best(
    spark: SparkSession, tmp_path: Path, data_dir: Path, method: str
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(SMALL_GRID % method, encoding="utf-8")
    load_params.cache_clear()
    runner = CliRunner()
    base = ["--workspace", str(tmp_path / "ws"), "--config", str(config)]
    ingest = runner.invoke(cli.app, [*base, "ingest", str(data_dir / "yellow_tripdata_sample_2020-07.csv")])
    assert ingest.exit_code == 0, ingest.output
    result = runner.invoke(cli.app, [*base, "train", "--tune", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'ws' / 'mlflow.db').resolve()}")
    tuning = json.loads(Path(client.download_artifacts(payload["run_id"], "tuning.json", str(tmp_path))).read_text())
    assert tuning["grid_size"] == 2
    assert tuning["best_params"]["maxDepth"] in (2, 3)
    run = client.get_run(payload["run_id"])
    assert run.data.params["estimator_maxDepth"] == str(tuning["best_params"]["maxDepth"])
    assert run.data.tags["tuned"] == "true"
