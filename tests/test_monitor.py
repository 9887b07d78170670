"""monitor and cycle on the real TLC yellow months, through the CLI: one champion trained on 2018-01..03 (a small
GBT), then no alert on 2018-06, an alert on 2020-04, the report in headless Chromium, bad input, and a cycle over
the 2020 months that retrains and promotes a champion better on the newest trips."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from unittest import mock

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from conftest import cli_json, copy_workspace
from taxi_duration import cli
from taxi_duration.monitor.job import ALERT_EXIT_CODE
from taxi_duration.registry.spark_model import load_spark_model
from taxi_duration.train.evaluate import predict_minutes, regression_metrics

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "taxi_duration" / "data" / "tlc_yellow_samples"
FAST_MODEL = """
train:
  gbt: {maxIter: 10, maxDepth: 5, stepSize: 0.3, maxBins: 32, subsamplingRate: 0.8, featureSubsetStrategy: all}
  window_months: 3
"""


def month(name: str) -> str:
    return str(SAMPLES / f"yellow_tripdata_sample_{name}.csv.gz")


def run(workspace: Path, *args: str, code: int = 0) -> dict:
    return cli_json(workspace, *args, config=workspace / "fast.yaml", code=code)


def snapshot(workspace: Path) -> dict[str, tuple[int, int]]:
    """Every file under the workspace but the MLflow store, with size and mtime: what a command changed."""
    files = {
        str(p.relative_to(workspace)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in workspace.rglob("*")
        if p.is_file() and not p.name.startswith("mlflow.db") and p.relative_to(workspace).parts[0] != "tmp"
    }
    assert any(name.startswith("lakehouse/trips/") for name in files)
    return files


def mlflow_runs(workspace: Path) -> int:
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=1000))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, spark: SparkSession) -> Path:
    root = tmp_path_factory.mktemp("monitor")
    (root / "fast.yaml").write_text(FAST_MODEL, encoding="utf-8")
    run(root, "ingest", *[month(f"2018-0{m}") for m in (1, 2, 3)])
    trained = run(root, "train")
    assert trained["promotion"]["promote"] is True
    run(root, "ingest", month("2018-06"), month("2020-04"))
    return root


@pytest.fixture(scope="module")
def champion_run(workspace: Path) -> dict:
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    version = client.get_model_version_by_alias("taxi-duration", "champion")
    return {"version": version.version, "run": client.get_run(version.run_id)}


@pytest.fixture(scope="module")
def june_2018(workspace: Path) -> dict:
    """The first monitor run of the module's workspace: 2018-06 against the champion's training trips."""
    return run(workspace, "monitor", "--from", "2018-06-01", "--to", "2018-07-01", "--window", "week")


def test_no_alert_on_an_ordinary_later_2018_month(june_2018: dict, champion_run: dict) -> None:
    result = june_2018
    assert result["alert"] is False and result["reasons"] == []
    params = champion_run["run"].data.params
    # the default reference is the champion's own training trips
    assert result["reference"]["from"] == params["data_first_pickup"]
    trained_rows = int(params["data_train_rows"]) + int(params["data_validation_rows"])
    assert trained_rows <= result["rows_reference"] <= trained_rows + 20  # + stray-dated trips of later files
    assert 9000 < result["rows_current"] < 10000
    assert result["prediction_psi"] < 0.1 and result["drifted_features"] == []
    realized = result["realized"]
    assert realized["reference_rmsle"] == pytest.approx(champion_run["run"].data.metrics["rmsle"])
    assert realized["ratio"] == pytest.approx(realized["rmsle"] / realized["reference_rmsle"])
    assert realized["ratio"] < 1.25
    assert result["predictions_reused"] == 0 and result["predictions_scored"] == (
        result["rows_current"] + result["rows_reference"]
    )


def test_beyond_max_trips_the_statistics_read_a_sample_chosen_by_trip_id(
    workspace: Path, june_2018: dict, tmp_path: Path
) -> None:
    copy = copy_workspace(workspace, tmp_path / "copy")  # the module's monitoring history stays as it is
    (copy / "sampled.yaml").write_text(FAST_MODEL + "monitor:\n  max_trips: 4000\n", encoding="utf-8")
    args = ["monitor", "--from", "2018-06-01", "--to", "2018-07-01", "--window", "week"]
    result = cli_json(copy, *args, config=copy / "sampled.yaml")
    # the counts stay exact; the statistics read about 4,000 trips of each period, the same trips on every run
    assert (result["rows_current"], result["rows_reference"]) == (
        june_2018["rows_current"],
        june_2018["rows_reference"],
    )
    shares = {"current": 4000 / result["rows_current"], "reference": 4000 / result["rows_reference"]}
    assert result["sampled"] == {period: round(share, 6) for period, share in shares.items()}
    assert june_2018["sampled"] == {"current": 1.0, "reference": 1.0}
    assert 7200 < result["predictions_scored"] < 8800 and result["predictions_reused"] == 0
    assert result["realized"]["rmsle"] == pytest.approx(june_2018["realized"]["rmsle"], rel=0.05)
    assert result["alert"] is False and result["drifted_features"] == []
    again = cli_json(copy, *args, config=copy / "sampled.yaml")
    assert (again["realized"], again["prediction_psi"]) == (result["realized"], result["prediction_psi"])


@pytest.fixture(scope="module")
def april_2020(workspace: Path, june_2018: dict) -> dict:
    """The second monitor run (after June's): 2020-04, the lockdown, with --fail-on-alert, through the console
    entry point (`cli.main`) as a scheduler runs it: exit 4, and the last line printed is the monitor's JSON."""
    args = ["--workspace", str(workspace), "--config", str(workspace / "fast.yaml"), "monitor"]
    args += ["--from", "2020-04-01", "--to", "2020-05-01", "--window", "day", "--fail-on-alert", "--json"]
    with (
        mock.patch.object(sys, "argv", ["taxi-duration", *args]),
        contextlib.redirect_stdout(io.StringIO()) as out,
        pytest.raises(SystemExit) as exit_info,
    ):
        cli.main()
    assert exit_info.value.code == ALERT_EXIT_CODE == 4
    result: dict = json.loads(out.getvalue().strip().splitlines()[-1])
    return result


def test_alert_on_2020_04_exits_with_the_alert_code(
    april_2020: dict, june_2018: dict, workspace: Path, spark: SparkSession
) -> None:
    result = april_2020  # exited with ALERT_EXIT_CODE (4)
    assert result["alert"] is True
    # the lockdown: trips much shorter than the champion predicts ...
    assert result["realized"]["ratio"] > 1.25 and result["realized"]["bias_minutes"] > 1.0
    assert any(r.startswith("realised RMSLE") for r in result["reasons"])
    # ... because the speed changed: the target moved far more than the prediction (made from zones, distances
    # and time, which moved less)
    features = {f["feature"]: f for f in result["features"]}
    assert features["actual_duration_minutes"]["psi"] > 3 * result["prediction_psi"]
    assert {"pickup_lat", "pickup_lon"} <= set(result["drifted_features"])

    monitoring = workspace / "lakehouse" / "monitoring"
    runs = spark.read.parquet(str(monitoring / "runs")).orderBy("monitored_at").collect()
    # appended: June's run (no alert) is still there, before this one
    assert [(r["run_id"], r["alert"], r["current_from"][:10]) for r in runs] == [
        (june_2018["run_id"], False, "2018-06-01"),
        (result["run_id"], True, "2020-04-01"),
    ]
    drift = spark.read.parquet(str(monitoring / "drift")).filter(F.col("run_id") == result["run_id"])
    overall = {r["feature"]: r["psi"] for r in drift.filter(F.col("window_start").isNull()).collect()}
    assert overall == {f["feature"]: f["psi"] for f in result["features"]}
    days = drift.filter(F.col("window_start").isNotNull() & (F.col("feature") == "predicted_duration_minutes"))
    assert days.count() == 30
    profile = spark.read.parquet(str(monitoring / "profile")).filter(F.col("run_id") == result["run_id"])
    current = profile.filter((F.col("period") == "current") & (F.col("level") == "period")).first()
    assert current is not None and current["rmsle"] == pytest.approx(result["realized"]["rmsle"])
    boroughs = profile.filter((F.col("period") == "current") & (F.col("level") == "borough"))
    assert boroughs.agg(F.sum("rows")).first()[0] == current["rows"] == result["rows_current"]
    quality = spark.read.parquet(str(monitoring / "quality")).filter(F.col("run_id") == result["run_id"])
    shares = {(r["period"], r["reason"]): r["share"] for r in quality.collect()}
    assert shares[("current", "all")] == pytest.approx(452 / 10000)  # 2020-04: 9,548 clean of 10,000

    client = MlflowClient(tracking_uri=f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    logged = client.get_run(result["run_id"])
    assert logged.data.metrics["prediction_psi"] == pytest.approx(result["prediction_psi"])
    assert logged.data.tags["alert"] == "true"
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"monitor.json", Path(result["report_path"]).name} <= artifacts
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment is not None and experiment.name == "taxi-duration-monitoring"


def test_the_report_renders_its_charts_in_chromium(april_2020: dict, workspace: Path) -> None:
    from playwright.sync_api import sync_playwright

    report = Path(april_2020["report_path"])
    assert report.parent == workspace.resolve() / "reports" / "monitoring"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.goto(report.as_uri())
            sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.alt])")
            headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
        finally:
            browser.close()
    alts = [alt for _, _, alt in sizes]
    assert "realised error per window" in alts and "PSI per window" in alts
    assert "predicted_duration_minutes distribution" in alts
    assert all(done and width > 100 for done, width, _ in sizes), sizes
    assert headings[0] == "ALERT"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from", "2019-01-01", "--to", "2019-02-01"],
            "current window [2019-01-01T00:00:00, 2019-02-01T00:00:00): 0 trips",
        ),
        (
            ["--from", "2010-01-01", "--to", "2010-02-01"],
            "current window [2010-01-01T00:00:00, 2010-02-01T00:00:00): 0 trips",
        ),
        (["--from", "2018-06-01", "--to", "2018-07-01", "--alias", "nobody"], "models:/taxi-duration@nobody: no such"),
        (
            [
                "--from",
                "2018-06-01",
                "--to",
                "2018-07-01",
                "--reference-from",
                "2018-06-01",
                "--reference-to",
                "2018-06-02",
            ],
            "reference window [2018-06-01T00:00:00, 2018-06-02T00:00:00): ",
        ),
        (["--from", "2018-07-01", "--to", "2018-06-01"], "--from 2018-07-01T00:00:00 must be before --to"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    workspace: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before, runs = snapshot(workspace), mlflow_runs(workspace)
    argv = ["taxi-duration", "--workspace", str(workspace), "--config", str(workspace / "fast.yaml"), "monitor", *args]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert snapshot(workspace) == before and mlflow_runs(workspace) == runs


def test_stream_source_reads_the_stream_predictions(april_2020: dict, workspace: Path, spark: SparkSession) -> None:
    """The stream's predictions table (its schema, written as the stream commits a batch: 2020-04 scored by the
    champion) monitored with --source stream: its predictions are reused, and the realised error is the one the
    lakehouse trips give."""
    from taxi_duration.score.batch import with_predictions
    from taxi_duration.stream.paths import PREDICTIONS_SCHEMA

    mlflow.set_tracking_uri(f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    trips = (
        spark.read.parquet(str(workspace / "lakehouse" / "trips"))
        .filter(F.col("pickup_datetime") >= F.lit("2020-04-01").cast("timestamp"))
        .filter(F.col("pickup_datetime") < F.lit("2020-05-01").cast("timestamp"))
    )
    model = load_spark_model("models:/taxi-duration/1", spark)
    landed = F.current_timestamp().alias("landed_at")
    stream_rows = trips.select("*", landed).transform(
        with_predictions(model, "taxi-duration", "1", keep=("source_file", "landed_at"))
    )
    target = workspace / "stream" / "predictions" / "batch_id=0"
    stream_rows.select(*[F.col(f.name).cast(f.dataType) for f in PREDICTIONS_SCHEMA.fields]).write.parquet(str(target))
    from_stream = run(workspace, "monitor", "--from", "2020-04-01", "--to", "2020-05-01", "--source", "stream")
    assert from_stream["source"] == "stream"
    # the same window monitored from the lakehouse trips (`april_2020`), as its runs row recorded it
    runs = spark.read.parquet(str(workspace / "lakehouse" / "monitoring" / "runs"))
    (from_trips,) = runs.filter(F.col("run_id") == april_2020["run_id"]).collect()
    assert (from_trips["source"], from_trips["current_from"]) == ("trips", "2020-04-01T00:00:00")
    assert from_stream["rows_current"] == from_trips["rows_current"] == trips.count()
    assert from_stream["predictions_reused"] == from_stream["rows_current"]
    assert from_stream["realized"]["rmsle"] == pytest.approx(from_trips["realized_rmsle"], rel=1e-9)
    assert from_stream["quality"] == []  # quarantine shares are the lakehouse's


def test_cycle_over_2020_retrains_a_better_champion_and_is_idempotent(workspace: Path, spark: SparkSession) -> None:
    files = [month(f"2020-0{m}") for m in range(1, 7)]
    first = run(workspace, "cycle", *files)
    assert first["ingested"] == files and first["scored"] > 50000
    assert first["window"] == {"from": "2020-01-01T00:00:00", "to": "2020-07-01T00:00:00"}
    assert first["monitor"]["alert"] is True
    assert first["retrained"] is True and first["promoted"] is True
    assert first["train"]["window"] == {"from": "2020-04-01T00:00:00", "to": "2020-07-01T00:00:00"}
    assert first["champion_version"] == first["train"]["model_version"] == "2"

    # the new champion against the old one on the newest trips (the last two weeks of June 2020)
    newest = (
        spark.read.parquet(str(workspace / "lakehouse" / "trips"))
        .filter(F.col("pickup_datetime") >= F.lit("2020-06-16").cast("timestamp"))
        .filter(F.col("pickup_datetime") < F.lit("2020-07-01").cast("timestamp"))
    )
    mlflow.set_tracking_uri(f"sqlite:///{workspace.resolve() / 'mlflow.db'}")
    old, new = (
        regression_metrics(predict_minutes(load_spark_model(f"models:/taxi-duration/{v}", spark), newest))["rmsle"]
        for v in ("1", "2")
    )
    assert new < old

    before, runs = snapshot(workspace), mlflow_runs(workspace)
    second = run(workspace, "cycle", *files)
    assert second["ingested"] == [] and second["skipped_files"] == files
    assert (second["monitor"], second["retrained"], second["promoted"]) == (None, False, False)
    assert second["champion_version"] == "2"
    assert snapshot(workspace) == before and mlflow_runs(workspace) == runs
