"""The real pipeline through the CLI on the real TLC sample: ingest, train (twice), score, report, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mlflow.artifacts import download_artifacts
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from conftest import cli_json
from taxi_duration import cli
from taxi_duration.features.definitions import FEATURE_INPUT_COLUMNS

pytestmark = pytest.mark.slow
# the default GBT's shape (depth 5) with 10 trees at a larger step: what `train` does around the model is the same
# at any size, and 100 trees took 200 of this test's 270 s (the default's accuracy on real months is measured by
# benchmarks/model_quality.py, docs/benchmarks.md)
E2E_CONFIG = "train:\n  gbt: {maxIter: 10, maxDepth: 5, stepSize: 0.3}\n"


def run(workspace: Path, *args: str) -> dict:
    return cli_json(workspace, *args, config=workspace / "e2e.yaml")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, spark: SparkSession) -> Path:
    path = tmp_path_factory.mktemp("workspace")
    (path / "e2e.yaml").write_text(E2E_CONFIG, encoding="utf-8")
    return path


def test_pipeline_on_the_real_sample(workspace: Path, data_dir: Path, spark: SparkSession) -> None:
    sample = str(data_dir / "taxis_sample_2019-03.csv")
    ingested = run(workspace, "ingest", sample)
    assert (ingested["rows_in"], ingested["rows_clean"], ingested["rows_quarantined"]) == (6500, 6352, 148)
    assert json.loads((workspace / "reports" / "quality_report.json").read_text())["rows_in"] == 6500

    gbt = run(workspace, "train", "--model", "gbt")
    assert gbt["model_version"] == "1"
    assert gbt["promotion"]["promote"] is True
    # the acceptance bar: on the real sample the model beats the zone-pair median baseline on RMSLE
    assert gbt["metrics"]["rmsle"] < gbt["baseline_metrics"]["rmsle"]
    assert gbt["metrics"]["rows"] == gbt["data"]["validation_rows"] > 1000
    assert gbt["data"]["train_rows"] + gbt["data"]["validation_rows"] == 6352
    # one model serves every regime; before the trip (no distance) it still beats the zone-pair medians
    regimes = gbt["metrics_by_regime"]
    assert set(regimes) == {"recorded_distance", "zones_only", "coordinates_only"}
    assert regimes["recorded_distance"]["rows"] == gbt["metrics"]["rows"]
    assert regimes["recorded_distance"]["rmsle"] == pytest.approx(gbt["metrics"]["rmsle"], rel=1e-12)
    assert regimes["zones_only"]["rmsle"] < regimes["zones_only"]["baseline_rmsle"]
    assert regimes["coordinates_only"]["rmsle"] < regimes["coordinates_only"]["baseline_rmsle"]
    assert gbt["metrics"]["rmsle_seconds"] > gbt["metrics"]["rmsle"]  # log1p of seconds spreads more
    # train's session has a checkpoint directory (GBT cuts its lineage there every 10 trees): here the suite's
    # session, which the in-process CLI reuses, got one from the first command that asked for a session
    checkpoints = spark.sparkContext.getCheckpointDir()
    assert checkpoints is not None and "/tmp/spark-checkpoints/" in checkpoints
    # and the code-size limit at which scoring with features kept is compiled, not interpreted (spark.py)
    assert spark.conf.get("spark.sql.codegen.hugeMethodLimit") == "8000"

    # the linear challenger's metrics on a sample of the validation trips (train.max_eval_trips), chosen by trip id;
    # the champion is scored again on that same sample for the decision
    (workspace / "e2e-sampled.yaml").write_text(E2E_CONFIG + "  max_eval_trips: 600\n", encoding="utf-8")
    linear = cli_json(workspace, "train", "--model", "linear", config=workspace / "e2e-sampled.yaml")
    assert linear["model_version"] == "2"
    validation_rows = linear["data"]["validation_rows"]
    assert validation_rows == gbt["data"]["validation_rows"] and linear["data"]["eval_fraction"] == round(
        600 / validation_rows, 6
    )
    assert (
        abs(linear["metrics"]["rows"] - 600) < 100 and linear["baseline_metrics"]["rows"] == linear["metrics"]["rows"]
    )
    assert linear["metrics_by_regime"]["recorded_distance"]["rows"] == linear["metrics"]["rows"]
    decision = linear["promotion"]
    assert decision["champion"] != pytest.approx(gbt["metrics"]["rmsle"], rel=1e-9)  # not the full set's figure
    assert decision["champion_version"] == "1"
    assert decision["promote"] is (decision["challenger"] < decision["champion"] * (1 - decision["tolerance"]))
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    champion = str(client.get_model_version_by_alias("taxi-duration", "champion").version)
    challenger = str(client.get_model_version_by_alias("taxi-duration", "challenger").version)
    assert (champion, challenger) == ("2" if decision["promote"] else "1", "2")
    # the Spark model carries a signature (Unity Catalog registers nothing without one)
    logged = Model.load(download_artifacts(f"runs:/{gbt['run_id']}/model/MLmodel", tracking_uri=client.tracking_uri))
    assert logged.signature is not None
    assert logged.signature.inputs.input_names() == list(FEATURE_INPUT_COLUMNS)
    assert logged.signature.outputs.input_names() == ["prediction"]
    run_metrics = client.get_run(gbt["run_id"]).data.metrics
    assert run_metrics["zones_only_rmsle"] == pytest.approx(regimes["zones_only"]["rmsle"])
    assert {a.path for a in client.list_artifacts(gbt["run_id"])} >= {"metrics_by_regime.json", "travel_times.json"}
    artifacts = {a.path for a in client.list_artifacts(gbt["run_id"], "plots")}
    assert {
        "plots/feature_importance.png",
        "plots/residuals_by_hour.png",
        "plots/predicted_vs_actual.png",
    } <= artifacts

    scored = run(workspace, "score")
    assert (scored["rows"], scored["model_version"]) == (6352, champion)
    predictions = spark.read.parquet(scored["predictions_path"])
    assert predictions.filter("predicted_duration_minutes IS NULL OR predicted_duration_minutes <= 0").count() == 0

    # the API's exported model gives Spark's batch predictions, trip by trip, on the real sample
    from taxi_duration.serve.champion import alias_loader
    from taxi_duration.settings import Settings
    from taxi_duration.tracking import configure_mlflow

    configure_mlflow(Settings(workspace=workspace))
    exported = alias_loader("taxi-duration", "champion")[0]()
    assert exported is not None and exported.version == champion
    trips = spark.read.parquet(str(workspace / "lakehouse" / "trips")).toPandas()
    spark_minutes = predictions.select("trip_id", "predicted_duration_minutes").toPandas()
    joined = trips.merge(spark_minutes, on="trip_id", how="inner", validate="one_to_one")
    assert len(joined) == 6352
    online = exported.predict_batch(joined)
    assert abs(online - joined["predicted_duration_minutes"].to_numpy()).max() < 1e-6

    predicted = run(workspace, "predict", sample, "--out", str(workspace / "sample_predictions.parquet"))
    assert (predicted["rows"], predicted["model_version"]) == (6500, champion)

    reported = run(workspace, "report")
    html = Path(reported["report_path"]).read_text(encoding="utf-8")
    assert "Manhattan" in html and "data:image/png;base64," in html
    boroughs = {row["pickup_borough"]: row["trips"] for row in reported["by_borough"]}
    assert sum(boroughs.values()) == 6352 and max(boroughs, key=boroughs.__getitem__) == "Manhattan"


def test_unknown_format_is_one_line_and_non_zero(tmp_path: Path, spark: SparkSession, capsys, monkeypatch) -> None:
    weird = tmp_path / "weather.csv"
    weird.write_text("city,temperature\nNYC,3\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["taxi-duration", "--workspace", str(tmp_path / "ws"), "ingest", str(weird)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {weird}: columns match no known trip format; found [city, temperature]; "
        "known formats: yellow, green, hvfhv, fhv, kaggle_train, kaggle_test"
    )
    assert not (tmp_path / "ws" / "lakehouse").exists()


def test_score_before_train_says_what_to_do(tmp_path: Path, spark: SparkSession, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["taxi-duration", "--workspace", str(tmp_path), "train"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "no trips table yet; run `taxi-duration ingest PATH...` first" in capsys.readouterr().err
