"""The score job: load `models:/<name>@<alias>`, score trips, write `predictions`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.errors import ModelNotFoundError
from taxi_duration.registry.promotion import alias_version
from taxi_duration.registry.spark_model import load_spark_model
from taxi_duration.score.batch import with_predictions


@dataclass
class ScoreResult:
    model_name: str
    model_version: str
    alias: str
    rows: int
    mean_predicted_minutes: float | None
    predictions_path: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_score(trips: DataFrame, model_name: str, alias: str, predictions_path: Path | str) -> ScoreResult:
    """Score every trip with the aliased model version and overwrite the predictions table."""
    version = alias_version(MlflowClient(), model_name, alias)
    if version is None:
        raise ModelNotFoundError(
            f"models:/{model_name}@{alias}: no such registered model or alias; run `taxi-duration train` first"
        )
    model = load_spark_model(f"models:/{model_name}/{version}", trips.sparkSession)
    predictions = trips.transform(with_predictions(model, model_name, version))
    predictions.write.mode("overwrite").parquet(str(predictions_path))
    written = predictions.sparkSession.read.parquet(str(predictions_path))
    row = written.agg(F.count(F.lit(1)).alias("rows"), F.avg("predicted_duration_minutes").alias("mean")).first()
    assert row is not None
    return ScoreResult(
        model_name=model_name,
        model_version=version,
        alias=alias,
        rows=int(row["rows"]),
        mean_predicted_minutes=float(row["mean"]) if row["mean"] is not None else None,
        predictions_path=str(predictions_path),
    )
