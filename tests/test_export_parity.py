"""Exported models (JSON, no JVM) give Spark's predictions: GBT, random forest and linear pipelines, fitted on
hand-built trips (zones, coordinates only, missing distance, holidays, weekends) and scored on odd ones too."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from taxi_duration.features.definitions import FEATURE_COLUMNS, travel_times_in, with_features, with_label
from taxi_duration.features.travel_times import TravelTimes
from taxi_duration.params import ModelKind, TrainParams
from taxi_duration.schema import TRIP_COLUMNS, TRIP_SCHEMA
from taxi_duration.serve.export import MODEL_FILE, ExportError, export_model
from taxi_duration.serve.feature_tables import FeatureTables
from taxi_duration.serve.online_features import batch_features, trip_features
from taxi_duration.serve.predictor import ExportedModel, ExportedModelError
from taxi_duration.train.pipeline import build_pipeline
from taxi_duration.train.travel_times import build_travel_times
from taxi_duration.zones import load_zones

NEW_YORK = ZoneInfo("America/New_York")
HOLIDAYS = (date(2024, 7, 4), date(2023, 12, 25), date(2019, 11, 28), date(2024, 1, 1), date(2021, 12, 24))
AIRPORTS = (1, 132, 138)
TOLERANCE_MINUTES = 1e-6
KINDS: dict[ModelKind, dict[str, Any]] = {
    "gbt": {"gbt": {"maxIter": 5, "maxDepth": 4}},
    "rf": {"rf": {"numTrees": 5, "maxDepth": 4}},
    "linear": {"linear": {"maxIter": 20, "regParam": 0.01}},
    # num_workers left to the session (2 barrier tasks on local[2])
    "xgboost": {"xgboost": {"n_estimators": 8, "max_depth": 4, "learning_rate": 0.3}},
}


def _existing_wall_clock(moment: datetime) -> datetime:
    """Skip the hour that daylight saving time removes (a naive time there has no instant)."""
    round_trip = moment.replace(tzinfo=NEW_YORK).astimezone(UTC).astimezone(NEW_YORK).replace(tzinfo=None)
    return moment if round_trip == moment else moment + timedelta(hours=1)


def _trip(trip_id: int, **values: Any) -> dict[str, Any]:
    trip: dict[str, Any] = dict.fromkeys(TRIP_COLUMNS)
    trip.update(trip_id=trip_id, service="yellow", source_file="hand-built", **values)
    return trip


def training_trips(count: int = 260, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    trips = []
    for i in range(count):
        if i % 11 == 0:
            day = HOLIDAYS[i // 11 % len(HOLIDAYS)]
            pickup = datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60))
        else:
            pickup = datetime(2019, 1, 1) + timedelta(minutes=rng.randrange(60 * 24 * 365 * 6))
        pickup = _existing_wall_clock(pickup)
        values: dict[str, Any] = {"pickup_datetime": pickup, "passenger_count": rng.randint(1, 4)}
        if i % 7 == 0:  # Kaggle / TLC 2009-2015 style: coordinates, no zone ids
            values.update(
                pickup_latitude=round(rng.uniform(40.58, 40.88), 6),
                pickup_longitude=round(rng.uniform(-74.05, -73.76), 6),
                dropoff_latitude=round(rng.uniform(40.58, 40.88), 6),
                dropoff_longitude=round(rng.uniform(-74.05, -73.76), 6),
            )
        else:
            pickup_zone = AIRPORTS[i % 3] if i % 13 == 0 else rng.randint(1, 263)
            dropoff_zone = pickup_zone if i % 17 == 0 else rng.randint(1, 263)
            values.update(pickup_location_id=pickup_zone, dropoff_location_id=dropoff_zone)
        miles = round(rng.uniform(0.4, 18.0), 2)
        values["trip_distance"] = None if i % 5 == 0 else miles  # FHV and Kaggle files have none
        rush = 1.35 if 7 <= pickup.hour <= 19 and pickup.weekday() < 5 else 1.0
        values["duration_s"] = float(round((150 + 160 * miles) * rush * rng.uniform(0.8, 1.25)))
        trips.append(_trip(i, **values))
    return trips


def odd_trips(start: int) -> list[dict[str, Any]]:
    """Scored, not fitted: NULLs and values the training trips never had."""
    noon = datetime(2024, 5, 18, 12, 5)
    rows = [
        {"pickup_location_id": 161, "dropoff_location_id": 236, "trip_distance": 2.1},  # no pickup time
        {"pickup_datetime": noon, "pickup_location_id": 264, "dropoff_location_id": 161},  # unknown zone
        {"pickup_datetime": noon, "pickup_location_id": 265, "dropoff_location_id": 265, "trip_distance": 9.0},
        {"pickup_datetime": noon, "pickup_location_id": 300, "dropoff_location_id": 48},  # not a TLC zone
        {  # coordinates outside the grid, no zone ids
            "pickup_datetime": noon,
            "pickup_latitude": 41.5,
            "pickup_longitude": -73.9,
            "dropoff_latitude": 40.75,
            "dropoff_longitude": -73.99,
        },
        {"pickup_datetime": noon, "pickup_latitude": 40.75, "dropoff_location_id": 132},  # half a coordinate
        {  # zone ids and coordinates: coordinates win for lat/lon, the zone for borough and airport
            "pickup_datetime": datetime(2024, 12, 25, 23, 59),
            "pickup_location_id": 132,
            "dropoff_location_id": 230,
            "pickup_latitude": 40.6441,
            "pickup_longitude": -73.7822,
            "trip_distance": 0.0,
        },
        {"pickup_datetime": datetime(2024, 7, 4, 16, 0, tzinfo=UTC), "pickup_location_id": 1, "dropoff_location_id": 1},
        {},  # nothing but the trip id
        {"pickup_datetime": datetime(2024, 11, 3, 1, 30), "pickup_location_id": 138, "trip_distance": 11.0},
    ]
    return [_trip(start + i, **row) for i, row in enumerate(rows)]


def _frame(spark: SparkSession, trips: list[dict[str, Any]]) -> DataFrame:
    return spark.createDataFrame([tuple(t[c] for c in TRIP_COLUMNS) for t in trips], TRIP_SCHEMA)


def regime_variants(trips: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """The trips as a booking app asks: zones without distance, then zone centroid coordinates only."""
    centroids = {z.location_id: (z.centroid_lat, z.centroid_lon) for z in load_zones() if z.centroid_lat}
    out = []
    for i, trip in enumerate(t for t in trips if t["pickup_location_id"] in centroids):
        zones_only = {**trip, "trip_id": start + 2 * i, "trip_distance": None}
        (pu_lat, pu_lon), (do_lat, do_lon) = (
            centroids[trip["pickup_location_id"]],
            centroids.get(trip["dropoff_location_id"], (None, None)),
        )
        coordinates_only = {
            **zones_only,
            "trip_id": start + 2 * i + 1,
            "pickup_location_id": None,
            "dropoff_location_id": None,
            "pickup_latitude": pu_lat,
            "pickup_longitude": pu_lon,
            "dropoff_latitude": do_lat,
            "dropoff_longitude": do_lon,
        }
        out += [zones_only, coordinates_only]
    return out


@pytest.fixture(scope="module")
def trips() -> list[dict[str, Any]]:
    train = training_trips()
    odd = odd_trips(len(train))
    return train + odd + regime_variants(train[:60], len(train) + len(odd))


@pytest.fixture(scope="module")
def travel_times(spark: SparkSession) -> TravelTimes:
    """The table of the training trips, every pair kept (min_trips 1) so pair, borough and overall rows all occur."""
    return build_travel_times(_frame(spark, training_trips()), min_trips=1)


@pytest.fixture(scope="module")
def exported(
    spark: SparkSession,
    trips: list[dict[str, Any]],
    travel_times: TravelTimes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[ExportedModel, dict[int, float], Path]]]:
    """Each kind fitted, saved, exported; with Spark's predicted minutes per trip id."""
    root = tmp_path_factory.mktemp("parity")
    train = _frame(spark, training_trips()).transform(with_label).cache()
    scored = _frame(spark, trips)
    result = {}
    for kind, overrides in KINDS.items():
        model = build_pipeline(kind, TrainParams(**overrides), travel_times).fit(train)
        saved = root / f"{kind}-spark"
        model.write().save(str(saved))
        spark_minutes = {
            row["trip_id"]: row["minutes"]
            for row in PipelineModel.load(str(saved))
            .transform(scored)
            .select("trip_id", (F.exp("prediction") / F.lit(60.0)).alias("minutes"))
            .collect()
        }
        folder = export_model(saved, root / f"{kind}-exported", "taxi-duration", "7", {"rmsle": 0.3})
        result[kind] = (ExportedModel.load(folder), spark_minutes, saved)
    train.unpersist()
    yield result


def _same(a: float | None, b: float, tolerance: float) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return math.isnan(b)
    return abs(a - b) <= tolerance * max(1.0, abs(a))


@pytest.mark.parametrize("with_table", [True, False], ids=["travel-times", "no-table"])
def test_online_features_equal_the_sql_features(
    spark: SparkSession, trips: list[dict[str, Any]], travel_times: TravelTimes, with_table: bool
) -> None:
    table = travel_times if with_table else None
    rows = _frame(spark, trips).transform(with_features, table).select("trip_id", *FEATURE_COLUMNS).collect()
    tables = FeatureTables.from_definitions(table)
    by_id = {t["trip_id"]: t for t in trips}
    batch = batch_features(pd.DataFrame(trips, columns=TRIP_COLUMNS), tables)
    position = {t["trip_id"]: i for i, t in enumerate(trips)}
    assert len(rows) == len(trips)
    for row in rows:
        single = trip_features(by_id[row["trip_id"]], tables)
        vector = batch[position[row["trip_id"]]]
        for index, name in enumerate(FEATURE_COLUMNS):
            assert _same(row[name], single[index], 1e-12), (row["trip_id"], name, row[name], single[index])
            assert _same(row[name], float(vector[index]), 1e-12), (row["trip_id"], name, row[name], vector[index])


@pytest.mark.parametrize("kind", list(KINDS))
def test_exported_predictions_equal_spark(
    kind: str, exported: dict[str, tuple[ExportedModel, dict[int, float], Path]], trips: list[dict[str, Any]]
) -> None:
    model, spark_minutes, _ = exported[kind]
    assert model.kind == kind
    batch = model.predict_batch(pd.DataFrame(trips, columns=TRIP_COLUMNS))
    for trip, from_batch in zip(trips, batch, strict=True):
        expected = spark_minutes[trip["trip_id"]]
        single = model.predict_minutes(trip)
        assert _same(expected, single, TOLERANCE_MINUTES), (kind, trip, expected, single)
        assert _same(expected, float(from_batch), TOLERANCE_MINUTES), (kind, trip, expected, from_batch)
    finite = [v for v in spark_minutes.values() if v is not None and not math.isnan(v)]
    assert len(finite) >= len(trips) - (12 if kind == "linear" else 0)  # NULL features make a linear model NaN


def test_exported_file_is_plain_json(exported: dict[str, tuple[ExportedModel, dict[int, float], Path]]) -> None:
    model, _, _ = exported["gbt"]
    assert model.path is not None
    document = json.loads((model.path / MODEL_FILE).read_text(encoding="utf-8"))
    assert document["kind"] == "gbt" and document["model_version"] == "7"
    assert document["feature_columns"] == list(FEATURE_COLUMNS)
    assert len(document["trees"]) == len(document["tree_weights"]) == 5
    assert document["tree_weights"][0] == 1.0 and document["tree_weights"][1] == pytest.approx(0.1)
    stored = model._tables.travel_times
    assert stored is not None and TravelTimes.from_json(document["travel_times"]).to_json() == stored.to_json()
    assert sorted(p.name for p in model.path.iterdir()) == [MODEL_FILE]
    rf, _, _ = exported["rf"]
    assert rf.feature_columns == ("distance", "pickup_hour", "pickup_weekday")
    assert rf.info()["metrics"] == {"rmsle": 0.3}


def test_xgboost_export_is_xgboost_s_trees_as_json(
    exported: dict[str, tuple[ExportedModel, dict[int, float], Path]], tmp_path: Path
) -> None:
    model, _, saved = exported["xgboost"]
    assert model.path is not None
    document = json.loads((model.path / MODEL_FILE).read_text(encoding="utf-8"))
    assert document["estimator_class"] == "xgboost.spark.estimator.SparkXGBRegressorModel"
    assert (document["tree_combine"], document["objective"], len(document["trees"])) == (
        "sum_float32",
        "reg:squarederror",
        8,
    )
    assert document["feature_columns"] == list(FEATURE_COLUMNS) and document["max_depth"] <= 4
    # the mean of ln(seconds) of the training trips, as a float32 (XGBoost's boost_from_average)
    assert 5.0 < document["base_score"] < 8.0 and float(np.float32(document["base_score"])) == document["base_score"]
    flags = [flag for tree in document["trees"] for flag in tree["missing_left"]]
    assert len(flags) == sum(len(tree["feature"]) for tree in document["trees"])
    # a model whose metadata carries pickled callbacks is not exported, nor loaded by the registry's loader
    from taxi_duration.errors import TaxiDurationError
    from taxi_duration.registry.spark_model import refuse_pickled_stages

    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(saved, tampered)
    (meta,) = tampered.glob("stages/2_*/metadata/part-*")
    stage_meta = json.loads(meta.read_text(encoding="utf-8"))
    # the key spelt with a JSON escape, as a crafted file could: the same key to xgboost.spark's reader
    line = json.dumps({**stage_meta, "serialized_callbacks": "gASV"}).replace("_callbacks", "\\u005fcallbacks")
    assert "serialized_callbacks" not in line and json.loads(line)["serialized_callbacks"] == "gASV"
    meta.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ExportError, match="pickled callbacks"):
        export_model(tampered, tmp_path / "out", "m", "1")
    with pytest.raises(TaxiDurationError, match="serialized_callbacks"):
        refuse_pickled_stages(tampered)
    refuse_pickled_stages(saved)  # the model train saves is fine


def test_export_reads_an_mlflow_spark_model_folder(
    exported: dict[str, tuple[ExportedModel, dict[int, float], Path]], tmp_path: Path
) -> None:
    _, _, saved = exported["linear"]
    mlflow_model = tmp_path / "model"
    mlflow_model.mkdir()
    (mlflow_model / "MLmodel").write_text("flavors: {}\n", encoding="utf-8")
    (mlflow_model / "sparkml").symlink_to(saved, target_is_directory=True)
    model = ExportedModel.load(export_model(mlflow_model, tmp_path / "out", "m", "1"))
    assert model.kind == "linear"


def test_export_and_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a saved Spark PipelineModel"):
        export_model(tmp_path, tmp_path / "out", "m", "1")
    with pytest.raises(ExportedModelError, match="cannot read"):
        ExportedModel.load(tmp_path / "missing")
    (tmp_path / MODEL_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ExportedModelError, match="not valid JSON"):
        ExportedModel.load(tmp_path)
    (tmp_path / MODEL_FILE).write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(ExportedModelError, match="not an exported taxi-duration model"):
        ExportedModel.load(tmp_path)


def test_predicting_starts_no_jvm(exported: dict[str, tuple[ExportedModel, dict[int, float], Path]]) -> None:
    model, _, _ = exported["gbt"]
    script = (
        "import sys\n"
        "from taxi_duration.serve.predictor import ExportedModel\n"
        f"m = ExportedModel.load({str(model.path)!r})\n"
        "print(m.predict_minutes({'pickup_datetime': '2024-05-01T08:30:00', 'PULocationID': 161, "
        "'DOLocationID': 236, 'trip_distance': 2.4}))\n"
        "from pyspark import SparkContext\n"
        "assert SparkContext._gateway is None and SparkContext._jvm is None\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    expected = model.predict_minutes(
        {"pickup_datetime": datetime(2024, 5, 1, 8, 30), "pickup_location_id": 161, "dropoff_location_id": 236}
        | {"trip_distance": 2.4}
    )
    assert float(done.stdout.strip()) == pytest.approx(expected, abs=1e-12)


def test_mlflow_pyfunc_loads_without_spark(
    exported: dict[str, tuple[ExportedModel, dict[int, float], Path]],
    trips: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    from taxi_duration.serve.predictor import log_exported_pyfunc

    model, _, _ = exported["gbt"]
    assert model.path is not None
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading a model with code prepends its code folder
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("export-parity", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_exported_pyfunc(model.path)
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        frame = pd.DataFrame(trips[:40], columns=TRIP_COLUMNS).drop(columns=["trip_id", "service", "source_file"])
        predicted = np.asarray(loaded.predict(frame), dtype=np.float64).ravel()
    finally:
        mlflow.set_tracking_uri(previous)
    np.testing.assert_allclose(predicted, model.predict_batch(frame), rtol=0, atol=1e-9)


def test_travel_times_read_back_from_the_feature_sql(travel_times: TravelTimes) -> None:
    from taxi_duration.features.definitions import feature_sql

    assert len(travel_times.pairs) > 200 and travel_times.boroughs and travel_times.min_trips == 1
    statement = feature_sql(travel_times)
    read_back = travel_times_in(statement)
    assert read_back is not None and read_back.to_json() == travel_times.to_json()  # NaN medians come back NaN
    assert feature_sql(read_back) == statement
    assert travel_times_in(feature_sql()) is None
