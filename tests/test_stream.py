"""The stream against a real registered champion: same predictions and quarantine as batch, bad files, event-time
windows with late and out-of-order trips, the champion moving between batches, exactly once across kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import mlflow.spark
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from conftest import copy_workspace
from taxi_duration import cli
from taxi_duration.ingest.job import run_ingest
from taxi_duration.params import QualityParams
from taxi_duration.score.batch import with_predictions
from taxi_duration.settings import Settings
from taxi_duration.stream.job import StreamOptions, read_borough_windows, read_stream_predictions, run_stream
from taxi_duration.stream.paths import StreamPaths
from taxi_duration.stream.replay import load_trips, replay
from taxi_duration.stream.scorer import ChampionTracker
from taxi_duration.tracking import configure_mlflow

pytestmark = pytest.mark.slow

MODEL = "taxi-duration"
HEADER = (
    "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,"
    "PULocationID,DOLocationID,fare_amount,tip_amount,total_amount"
)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, sample_champion: Path) -> Path:
    """A workspace whose registry has `taxi-duration@champion` = v1 (a small GBT trained on the real sample), this
    module's own copy: the tests move the alias and register versions."""
    workspace = copy_workspace(sample_champion, tmp_path_factory.mktemp("stream-ws"))
    configure_mlflow(Settings(workspace=workspace))
    return workspace


def own_paths(tmp_path: Path) -> StreamPaths:
    return StreamPaths(root=tmp_path / "stream", landing=tmp_path / "landing")


def stream_now(spark: SparkSession, paths: StreamPaths, watermark: str = "10 minutes") -> dict:
    options = StreamOptions(available_now=True, watermark=watermark)
    return run_stream(spark, paths, options, QualityParams(), MODEL, say=lambda _: None).to_dict()


def batch_scored(spark: SparkSession, root: Path, files: list[str], version: str) -> tuple[DataFrame, DataFrame]:
    """Batch ingest + batch scoring of the same files: (predictions, quarantine)."""
    run_ingest(spark, files, root / "trips", root / "quarantine", QualityParams())
    model = mlflow.spark.load_model(f"models:/{MODEL}/{version}")
    trips = spark.read.parquet(str(root / "trips"))
    return trips.transform(with_predictions(model, MODEL, version)), spark.read.parquet(str(root / "quarantine"))


def test_stream_scores_and_quarantines_exactly_like_batch(
    spark: SparkSession, champion: Path, data_dir: Path, tmp_path: Path
) -> None:
    paths = own_paths(tmp_path)
    trips, _ = load_trips([str(data_dir / "taxis_sample_2019-03.csv")])
    replay(trips, paths.landing, rate=1e9, files_per_second=1e9 / 2000, prefix="sample")  # 4 CSV files
    replay(trips.slice(0, 300), paths.landing, rate=1e9, files_per_second=1e9 / 300, fmt="json", prefix="json")
    bad = "1,2024-01-15 15:00:00"  # two fields: a malformed line
    good = "1,2024-01-15 08:00:00,2024-01-15 08:20:00,1,3.5,161,236,18.0,3.0,25.0"
    (paths.landing / "dirty.csv").write_text(f"{HEADER}\n{good}\n{bad}\n", encoding="utf-8")
    good_json = json.dumps(dict(zip(HEADER.split(","), good.split(","), strict=True)))
    bad_json = '{"tpep_pickup_datetime": "2024-01-15 08:00:00"'  # cut off
    (paths.landing / "dirty.jsonl").write_text(f"{good_json}\n{bad_json}\n", encoding="utf-8")
    (paths.landing / "weather.csv").write_text("city,temperature\nNYC,3\n", encoding="utf-8")
    (paths.landing / "empty.csv").write_text("", encoding="utf-8")

    summary = stream_now(spark, paths)
    assert summary["skipped_files"] == 1 and summary["model_versions"] == ["1"]
    skipped = [json.loads(line) for line in paths.skipped_files.read_text().splitlines()]
    weather = str(paths.landing / "weather.csv")
    assert [entry["reason"] for entry in skipped] == [
        f"{weather}: columns match no known trip format; found [city, temperature]; "
        "known formats: yellow, green, hvfhv, fhv, kaggle_train, kaggle_test"
    ]

    # the CSV files: trip for trip, the same ids, predictions (1e-6 min) and quarantine rows as batch ingest + score
    csv_files = sorted(str(p) for p in paths.landing.glob("*.csv") if p.name not in ("weather.csv", "empty.csv"))
    batch_predictions, batch_quarantine = batch_scored(spark, tmp_path / "batch", csv_files, "1")
    streamed = read_stream_predictions(spark, paths.predictions)
    streamed_csv = streamed.filter(F.col("source_file").endswith(".csv"))
    joined = streamed_csv.alias("s").join(batch_predictions.alias("b"), on="trip_id", how="full_outer")
    row = joined.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("s.predicted_duration_minutes").alias("streamed"),
        F.count("b.predicted_duration_minutes").alias("batch"),
        F.max(F.abs(F.col("s.predicted_duration_minutes") - F.col("b.predicted_duration_minutes"))).alias("diff"),
    ).first()
    assert row is not None
    assert (row["rows"], row["streamed"], row["batch"]) == (6353, 6353, 6353)  # the sample's 6,352 + dirty.csv's 1
    assert row["diff"] < 1e-6
    assert streamed.select("model_version").distinct().collect()[0][0] == "1"

    columns = ["trip_id", "reason", "reason_detail", "raw", "format", "source_file", "service", "source"]
    streamed_quarantine = spark.read.parquet(str(paths.quarantine)).filter(F.col("source_file").endswith(".csv"))
    assertDataFrameEqual(streamed_quarantine.select(*columns), batch_quarantine.select(*columns))
    malformed = streamed_quarantine.filter(F.col("reason") == "malformed_row").select("raw").collect()
    assert [json.loads(r["raw"])["_corrupt_record"] for r in malformed] == [bad]

    # JSON lines of the first 300 trips: the same predictions and reasons as those 300 trips ingested as CSV
    as_csv = replay(trips.slice(0, 300), tmp_path / "as-csv", rate=1e9, files_per_second=1e9 / 300, prefix="j")
    assert as_csv.files == 1
    csv_predictions, csv_quarantine = batch_scored(
        spark, tmp_path / "batch-json", [str(tmp_path / "as-csv" / "j-000000.csv")], "1"
    )
    json_predictions = streamed.filter(F.col("source_file").endswith("json-000000.jsonl"))
    got = sorted(r[0] for r in json_predictions.select("predicted_duration_minutes").collect())
    want = sorted(r[0] for r in csv_predictions.select("predicted_duration_minutes").collect())
    assert len(got) == len(want) > 250 and max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-6
    json_quarantine = spark.read.parquet(str(paths.quarantine)).filter(F.col("source_file").endswith(".jsonl"))
    json_reasons = json_quarantine.groupBy("source_file", "reason").count().collect()
    csv_reasons = csv_quarantine.groupBy("reason").count().collect()
    assert sorted((r["reason"], r["count"]) for r in json_reasons if r["source_file"].endswith("000.jsonl")) == sorted(
        (r["reason"], r["count"]) for r in csv_reasons
    )
    assert [(r["reason"], r["count"]) for r in json_reasons if r["source_file"].endswith("dirty.jsonl")] == [
        ("malformed_row", 1)
    ]


def trip(pickup: str, pu: int, do: int = 236) -> str:
    """A clean yellow trip on 2024-01-15 of exactly 10 minutes and 2 miles."""
    start = datetime.fromisoformat(f"2024-01-15 {pickup}")
    end = start + timedelta(minutes=10)
    return f"1,{start:%Y-%m-%d %H:%M:%S},{end:%Y-%m-%d %H:%M:%S},1,2.0,{pu},{do},10.0,1.0,12.0"


def test_late_and_out_of_order_trips_land_in_their_window_and_the_champion_moves(
    spark: SparkSession, champion: Path, tmp_path: Path
) -> None:
    paths = own_paths(tmp_path)
    paths.landing.mkdir(parents=True)
    manhattan, queens = 161, 132  # Midtown Center, JFK Airport
    # out of order within the file; the 10:40 trip moves the watermark (10 minutes) to 10:30
    first = [trip("10:07:00", manhattan), trip("10:01:00", manhattan), trip("10:40:00", manhattan)]
    first += [trip("10:02:30", manhattan), trip("10:03:00", queens)]
    (paths.landing / "a.csv").write_text(HEADER + "\n" + "\n".join(first) + "\n", encoding="utf-8")
    assert stream_now(spark, paths)["trips"] == 5

    # the alias moves between the two runs: the next batch is scored by v2
    client = MlflowClient()
    run_id = client.get_model_version(MODEL, "1").run_id
    v2 = str(mlflow.register_model(f"runs:/{run_id}/model", MODEL).version)
    client.set_registered_model_alias(MODEL, "champion", v2)

    # 10:33 and 10:31 are late but within the watermark; 10:04 is older than the watermark (10:30): not counted
    second = [trip("10:33:00", manhattan), trip("10:04:00", manhattan), trip("10:31:00", queens)]
    (paths.landing / "b.csv").write_text(HEADER + "\n" + "\n".join(second) + "\n", encoding="utf-8")
    summary = stream_now(spark, paths)
    assert (summary["trips"], summary["model_versions"]) == (3, [v2])

    # progress: one line per batch and query; the watermark after file a is 10:40 - 10 minutes (New York time)
    progress = [json.loads(line) for line in paths.progress.read_text().splitlines()]
    assert [(p["batch_id"], p["input_rows"]) for p in progress if p["query"] == "taxi_duration_score"] == [
        (0, 6),
        (1, 4),
    ]
    assert "2024-01-15T15:30:00.000Z" in {p["watermark"] for p in progress if p["query"] == "taxi_duration_windows"}

    windows = read_borough_windows(spark, paths.borough_windows)
    expected = spark.createDataFrame(
        [
            (datetime(2024, 1, 15, 10, 0), "Manhattan", 2, 2, 10.0),
            (datetime(2024, 1, 15, 10, 0), "Queens", 1, 1, 10.0),
            (datetime(2024, 1, 15, 10, 5), "Manhattan", 1, 1, 10.0),
            (datetime(2024, 1, 15, 10, 30), "Manhattan", 1, 1, 10.0),
            (datetime(2024, 1, 15, 10, 30), "Queens", 1, 1, 10.0),
            (datetime(2024, 1, 15, 10, 40), "Manhattan", 1, 1, 10.0),
        ],
        "window_start timestamp, pickup_borough string, trips long, trips_with_actual long, mean_actual_minutes double",
    )
    assertDataFrameEqual(windows.select(*expected.columns), expected, checkRowOrder=False)

    # every trip is predicted (lateness only matters for the counts), stamped with the version that scored it
    predictions = read_stream_predictions(spark, paths.predictions)
    versions = {
        r["source_file"].rsplit("/", 1)[-1]: r["versions"]
        for r in predictions.groupBy("source_file").agg(F.collect_set("model_version").alias("versions")).collect()
    }
    assert versions == {"a.csv": ["1"], "b.csv": [v2]}
    means = (
        predictions.filter(F.hour("pickup_datetime") == 10)
        .filter(~((F.minute("pickup_datetime") == 4) & (F.col("pickup_location_id") == manhattan)))
        .groupBy(F.window("pickup_datetime", "5 minutes").start.alias("window_start"), "pickup_location_id")
        .agg(F.avg("predicted_duration_minutes").alias("mean"))
    )
    by_window = {(r["window_start"], r["pickup_borough"]): r["mean_predicted_minutes"] for r in windows.collect()}
    for r in means.collect():
        borough = "Manhattan" if r["pickup_location_id"] == manhattan else "Queens"
        assert abs(by_window[(r["window_start"], borough)] - r["mean"]) < 1e-9

    # the tracker follows the alias at the next batch boundary, and reloads only when it moved
    tracker = ChampionTracker(MODEL, "champion")
    model_v2, version = tracker.current(spark)
    assert version == v2 and tracker.current(spark)[0] is model_v2
    client.set_registered_model_alias(MODEL, "champion", "1")
    model_v1, version = tracker.current(spark)
    assert version == "1" and model_v1 is not model_v2


def test_replay_lands_files_atomically_in_event_time_order(data_dir: Path, tmp_path: Path) -> None:
    trips, skipped = load_trips([str(data_dir / "taxis_sample_2019-03.csv")], limit=1000)
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    report = replay(trips, tmp_path, rate=500, files_per_second=2, prefix="t", clock=lambda: now[0], sleep=sleep)
    assert (report.rows, report.files, skipped) == (1000, 4, 0)
    assert sleeps == [0.5, 0.5, 0.5]  # one file of 250 trips every half second: 500 trips/s
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"t-00000{i}.csv" for i in range(4)]  # no temporary file left behind
    pickups = []
    for name in names:
        lines = (tmp_path / name).read_text().splitlines()
        assert lines[0].startswith("VendorID,tpep_pickup_datetime,") and len(lines) == 251
        pickups += [line.split(",")[1] for line in lines[1:]]
    assert pickups == sorted(pickups) and len(set(pickups)) > 900


def _committed(paths: StreamPaths) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(paths.commits.glob("*.json"))]


def test_exactly_once_across_kill_9(spark: SparkSession, champion: Path, data_dir: Path, tmp_path: Path) -> None:
    """Stream + replay, kill -9 the stream's process group mid-run, restart on the same checkpoint: every replayed
    trip is in predictions or quarantine exactly once, the same trips batch ingest finds in the same files."""
    paths = StreamPaths.under(champion)
    trips, _ = load_trips([str(data_dir / "taxis_sample_2019-03.csv")])
    command = [sys.executable, "-m", "taxi_duration.cli", "--workspace", str(champion), "--master", "local[2]"]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "TAXI_DURATION_DRIVER_MEMORY": "1g"}
    log = (tmp_path / "stream.log").open("w")
    stream = subprocess.Popen(
        [*command, "stream", "--trigger", "1s", "--max-files-per-trigger", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: the JVM dies with it
    )
    # 13 files of 500 trips, 2 files a second, while the stream starts and runs
    replayer = threading.Thread(
        target=replay, args=(trips, paths.landing), kwargs={"rate": 1000, "files_per_second": 2, "prefix": "r"}
    )
    replayer.start()
    try:
        deadline = time.time() + 300
        while not _committed(paths) and time.time() < deadline and stream.poll() is None:
            time.sleep(0.2)
        assert _committed(paths), (tmp_path / "stream.log").read_text()[-3000:]
    finally:
        os.killpg(stream.pid, signal.SIGKILL)
        stream.wait(timeout=60)
        replayer.join()
        log.close()
    files_done = sum(record["files"] for record in _committed(paths))
    assert 0 < files_done < 13  # killed mid-run

    restarted = subprocess.run(
        [*command, "stream", "--available-now", "--json"], capture_output=True, text=True, env=env, timeout=600
    )
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    summary = json.loads(restarted.stdout.strip().splitlines()[-1])
    assert summary["batches"] >= 1

    records = _committed(paths)
    assert [r["batch_id"] for r in records] == list(range(len(records)))
    assert sum(r["files"] for r in records) == 13
    assert sum(r["trips"] + r["quarantined"] for r in records) == 6500

    landed = sorted(str(p) for p in paths.landing.glob("r-*.csv"))
    batch_predictions, batch_quarantine = batch_scored(spark, tmp_path / "batch", landed, "1")
    streamed = read_stream_predictions(spark, paths.predictions)
    assert streamed.count() == streamed.select("trip_id").distinct().count() == 6352  # no duplicates
    assertDataFrameEqual(streamed.select("trip_id"), batch_predictions.select("trip_id"))  # no loss
    quarantined = spark.read.parquet(str(paths.quarantine))
    assertDataFrameEqual(quarantined.select("trip_id", "reason"), batch_quarantine.select("trip_id", "reason"))
    # replayed in event-time order, no trip is behind the watermark: the windows count each trip once
    windows = read_borough_windows(spark, paths.borough_windows).agg(F.sum("trips")).first()
    assert windows is not None and windows[0] == 6352


def test_stream_without_a_champion_is_one_line_and_non_zero(
    tmp_path: Path, spark: SparkSession, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["taxi-duration", "--workspace", str(tmp_path), "stream", "--available-now"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "error: models:/taxi-duration@champion: no such registered model or alias; run `taxi-duration train` first"
    )
    monkeypatch.setattr(sys, "argv", ["taxi-duration", "--workspace", str(tmp_path), "stream", "--trigger", "soon"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --trigger: expected an interval like 2s, found 'soon'"
    for args, message in [
        (["--clean-source", "move"], "error: --clean-source: expected one of off, archive, delete, found 'move'"),
        (
            ["--archive-dir", str(tmp_path / "a")],
            "error: --archive-dir: only used with --clean-source archive, found --clean-source off",
        ),
        (
            ["--clean-source", "archive", "--archive-dir", str(tmp_path / "stream" / "landing" / "old")],
            f"error: --archive-dir {tmp_path.resolve()}/stream/landing/old: archived files keep their full path "
            f"under it ({tmp_path.resolve()}/stream/landing/old{tmp_path.resolve()}/stream/landing/...), which is "
            f"inside the landing folder {tmp_path.resolve()}/stream/landing; choose a folder outside it",
        ),
    ]:
        monkeypatch.setattr(sys, "argv", ["taxi-duration", "--workspace", str(tmp_path), "stream", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == message


def test_clean_source_archives_a_batchs_files_once_the_next_batch_starts(
    spark: SparkSession, champion: Path, tmp_path: Path
) -> None:
    configure_mlflow(Settings(workspace=champion))  # a CLI test before may have pointed MLflow elsewhere
    paths = own_paths(tmp_path)
    paths.landing.mkdir(parents=True)
    options = StreamOptions(available_now=True, clean_source="archive")
    (paths.landing / "a.csv").write_text(HEADER + "\n" + trip("10:00:00", 161) + "\n", encoding="utf-8")
    first = run_stream(spark, paths, options, QualityParams(), MODEL, say=lambda _: None)
    assert (first.batches, first.trips) == (1, 1)
    assert sorted(p.name for p in paths.landing.iterdir()) == ["a.csv"]  # kept until the next batch starts

    (paths.landing / "b.csv").write_text(HEADER + "\n" + trip("10:05:00", 161) + "\n", encoding="utf-8")
    second = run_stream(spark, paths, options, QualityParams(), MODEL, say=lambda _: None)
    assert (second.batches, second.trips) == (1, 1)
    assert sorted(p.name for p in paths.landing.iterdir()) == ["b.csv"]
    archived = list(paths.archive.rglob("*.csv"))
    assert [p.relative_to(paths.archive) for p in archived] == [(paths.landing / "a.csv").relative_to("/")]
    # archiving moved the file, it did not re-read it: each trip once
    predictions = read_stream_predictions(spark, paths.predictions)
    assert predictions.count() == predictions.select("trip_id").distinct().count() == 2
