"""Parity at scale: on 10,000+ trips (the real sample plus synthetic ones, some with fields removed), the exported
JVM-free model gives Spark's batch predictions to 1e-6 minutes, for GBT, RF and XGBoost with the project's default
sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from taxi_duration.features.definitions import with_label
from taxi_duration.generate.synthetic import synthetic_trips
from taxi_duration.ingest.formats import YELLOW
from taxi_duration.ingest.normalize import to_canonical
from taxi_duration.ingest.readers import Source, read_header, read_raw
from taxi_duration.params import QualityParams, load_params
from taxi_duration.quality.rules import classify, to_trips
from taxi_duration.schema import TRIP_COLUMNS
from taxi_duration.serve.export import export_model
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.train.job import fit_model
from taxi_duration.train.travel_times import build_travel_times

pytestmark = pytest.mark.slow
TOLERANCE_MINUTES = 1e-6


def clean_trips(raw: DataFrame, source: Source) -> DataFrame:
    return (
        raw.transform(to_canonical(YELLOW, source))
        .transform(classify(QualityParams()))
        .transform(to_trips)
        .select(*TRIP_COLUMNS)
    )


@pytest.fixture(scope="module")
def trips(spark: SparkSession, data_dir: Path) -> DataFrame:
    sample = Source(str(data_dir / "taxis_sample_2019-03.csv"), "csv")
    real = clean_trips(read_raw(spark, sample, read_header(spark, sample)), sample)
    synthetic = clean_trips(synthetic_trips(spark, 4000, 2024, 3, seed=11), Source("synthetic", "parquet"))
    both = real.unionByName(synthetic)
    # a tenth of the trips lose their recorded distance and another tenth their passenger count, so the
    # fallbacks of the feature definitions are exercised too
    with_gaps = (
        both.withColumn("_n", F.abs(F.col("trip_id")) % 70)
        .withColumn("trip_distance", F.when(F.col("_n") % 10 == 0, None).otherwise(F.col("trip_distance")))
        .withColumn("passenger_count", F.when(F.col("_n") % 10 == 1, None).otherwise(F.col("passenger_count")))
        .drop("_n")
    )
    return with_gaps.persist()


@pytest.mark.parametrize("kind", ["gbt", "rf", "xgboost"])
def test_exported_equals_spark_on_10k_trips(spark: SparkSession, trips: DataFrame, kind, tmp_path: Path) -> None:
    # the path `train` runs: travel-time table, out-of-fold rows, masked distances
    # the default depths (where parity is hardest: many splits), fewer trees (each tree is checked the same way)
    defaults = load_params()
    fewer = {
        "gbt": {**defaults.train.gbt, "maxIter": 10},
        "rf": {**defaults.train.rf, "numTrees": 10},
        "xgboost": {**defaults.train.xgboost, "n_estimators": 30},
    }
    params = defaults.model_copy(update={"train": defaults.train.model_copy(update=fewer)})
    labeled = trips.transform(with_label)
    model, _ = fit_model(labeled, kind, params, False, build_travel_times(labeled, 3))
    model.write().overwrite().save(str(tmp_path / "spark_model"))
    exported = ExportedModel.load(export_model(tmp_path / "spark_model", tmp_path / "exported", "parity", "1"))

    scored = (
        model.transform(trips)
        .select("trip_id", (F.exp("prediction") / 60.0).alias("spark_minutes"))
        .join(trips, on="trip_id", how="inner")
        .toPandas()
    )
    assert len(scored) >= 10_000
    assert scored["trip_distance"].isna().sum() > 900
    online = exported.predict_batch(scored)
    assert np.abs(online - scored["spark_minutes"].to_numpy()).max() < TOLERANCE_MINUTES
    # one by one, as the API scores them
    for row in scored.sample(200, random_state=1).to_dict(orient="records"):
        trip = {key: None if isinstance(value, float) and np.isnan(value) else value for key, value in row.items()}
        single = exported.predict_minutes(trip)
        assert abs(single - row["spark_minutes"]) < TOLERANCE_MINUTES
