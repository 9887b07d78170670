"""The train job: split, fit, evaluate against the baseline, log to MLflow, register, promote."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, TrainValidationSplit
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration import __version__
from taxi_duration.errors import NoDataError
from taxi_duration.features.definitions import FEATURE_INPUT_COLUMNS, LABEL, with_label
from taxi_duration.params import ModelKind, PipelineParams
from taxi_duration.registry.promotion import PromotionDecision, alias_version, decide_promotion
from taxi_duration.registry.spark_model import load_spark_model, log_spark_model
from taxi_duration.serve.champion import EXPORTED_ARTIFACT
from taxi_duration.serve.export import export_model
from taxi_duration.serve.predictor import log_exported_pyfunc
from taxi_duration.train import plots
from taxi_duration.train.evaluate import (
    ACTUAL_MINUTES,
    PREDICTED_MINUTES,
    minutes_from_log_seconds,
    regression_metrics,
    with_baseline_prediction,
    zone_pair_medians,
)
from taxi_duration.train.pipeline import PREDICTION, build_pipeline, feature_columns, param_grid
from taxi_duration.train.split import cutoff_micros, time_split

PLOT_SAMPLE_ROWS = 5000
# what the pipeline, the baseline and the plots read
MODEL_INPUT_COLUMNS = ("trip_id", *FEATURE_INPUT_COLUMNS, "duration_s", LABEL)


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - start, 2)


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    model_kind: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    promotion: dict[str, Any]
    data: dict[str, Any]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_frame(
    trips: DataFrame,
    sample_fraction: float | None,
    seed: int,
    pickup_window: tuple[datetime, datetime] | None = None,
) -> DataFrame:
    """Trips usable for training (known duration) with the label; optionally only pickups in the half-open
    `pickup_window` (a rolling window of recent months) and optionally a sample."""
    usable = trips.filter(F.col("duration_s").isNotNull() & (F.col("duration_s") > 0))
    if pickup_window is not None:
        start, end = pickup_window
        # wall-clock literals in the session time zone, as pickups are stored
        bounds = [F.lit(t.isoformat(sep=" ")).cast("timestamp") for t in (start, end)]
        usable = usable.filter((F.col("pickup_datetime") >= bounds[0]) & (F.col("pickup_datetime") < bounds[1]))
    if sample_fraction is not None and sample_fraction < 1.0:
        usable = usable.sample(fraction=sample_fraction, seed=seed)
    return usable.transform(with_label)


def predict_minutes(model: PipelineModel, df: DataFrame) -> DataFrame:
    """Model predictions with predicted and actual minutes."""
    return (
        model.transform(df)
        .withColumn(PREDICTED_MINUTES, minutes_from_log_seconds(F.col(PREDICTION)))
        .withColumn(ACTUAL_MINUTES, F.col("duration_s") / F.lit(60.0))
    )


def fit_model(train: DataFrame, kind: ModelKind, params: PipelineParams, tune: bool) -> tuple[PipelineModel, dict]:
    """Fit the pipeline; with `tune`, search the grid with TrainValidationSplit or CrossValidator."""
    pipeline = build_pipeline(kind, params.train)
    if not tune:
        return pipeline.fit(train), {}
    grid = param_grid(pipeline, kind, params.train)
    evaluator = RegressionEvaluator(labelCol=LABEL, predictionCol=PREDICTION, metricName="rmse")
    tune_params = params.train.tune
    searcher: TrainValidationSplit | CrossValidator
    if tune_params.method == "cross_validator":
        searcher = CrossValidator(
            estimator=pipeline,
            estimatorParamMaps=grid,
            evaluator=evaluator,
            numFolds=tune_params.num_folds,
            parallelism=tune_params.parallelism,
            seed=params.train.seed,
        )
    else:
        searcher = TrainValidationSplit(
            estimator=pipeline,
            estimatorParamMaps=grid,
            evaluator=evaluator,
            trainRatio=0.8,
            parallelism=tune_params.parallelism,
            seed=params.train.seed,
        )
    search = searcher.fit(train)
    scores: list[float] = search.avgMetrics if isinstance(search, CrossValidatorModel) else search.validationMetrics
    best_index = min(range(len(scores)), key=lambda i: scores[i])
    best = {param.name: value for param, value in grid[best_index].items()}
    tuning = {"grid_size": len(grid), "best_params": best, "best_log_rmse": scores[best_index]}
    best_model = search.bestModel
    assert isinstance(best_model, PipelineModel)
    return best_model, tuning


def _importances(model: PipelineModel, kind: ModelKind) -> list[float]:
    last = model.stages[-1]
    if kind == "linear":
        return [abs(float(c)) for c in last.coefficients]  # type: ignore[attr-defined]
    return [float(v) for v in last.featureImportances.toArray()]  # type: ignore[attr-defined]


def run_train(
    trips: DataFrame,
    *,
    kind: ModelKind,
    params: PipelineParams,
    tune: bool,
    model_name: str,
    experiment_id: str,
    data_info: dict[str, Any],
    pickup_window: tuple[datetime, datetime] | None = None,
) -> TrainResult:
    """Train, evaluate, log and register one model; promote it if it beats the champion."""
    train_params = params.train
    timings: dict[str, float] = {}
    labeled = training_frame(trips, train_params.sample_fraction, train_params.seed, pickup_window).select(
        *MODEL_INPUT_COLUMNS
    )
    with _timed(timings, "split"):
        cutoff = cutoff_micros(labeled, train_params.validation_fraction)
    train, valid = time_split(labeled, cutoff)
    # only the columns the pipeline reads are cached: a third of the canonical row
    train = train.persist(StorageLevel.MEMORY_AND_DISK)
    valid = valid.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with _timed(timings, "cache"):
            stats = _data_stats(train, valid)
        if stats["train_rows"] == 0 or stats["validation_rows"] == 0:
            raise NoDataError(
                f"not enough trips to split by time: {stats['train_rows']} before and "
                f"{stats['validation_rows']} after the cutoff; ingest more data"
            )
        with _timed(timings, "fit"):
            model, tuning = fit_model(train, kind, params, tune)
        with _timed(timings, "evaluate"):
            scored = predict_minutes(model, valid).transform(with_baseline_prediction(zone_pair_medians(train)))
            scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
            metrics = regression_metrics(scored)
            baseline = regression_metrics(scored, predicted="baseline_minutes")
        data = {**data_info, **stats, "cutoff": datetime.fromtimestamp(cutoff / 1e6).isoformat()}
        with mlflow.start_run(experiment_id=experiment_id) as run:
            with _timed(timings, "log_run"):
                _log_run(model, kind, params, tune, tuning, metrics, baseline, data, scored)
            with _timed(timings, "log_model"):
                model_uri = log_spark_model(model, trips.sparkSession)
            with _timed(timings, "register"):
                version, decision = _register_and_promote(
                    model_uri, model_name, params, run.info.run_id, metrics, valid
                )
            with _timed(timings, "export"):
                _log_exported(model_uri, model_name, version, metrics)
            mlflow.log_metrics({f"seconds_{step}": value for step, value in timings.items()})
        scored.unpersist()
    finally:
        train.unpersist()
        valid.unpersist()
    return TrainResult(
        run_id=run.info.run_id,
        model_name=model_name,
        model_version=version,
        model_kind=kind,
        metrics=metrics,
        baseline_metrics=baseline,
        promotion=asdict(decision),
        data=data,
        seconds=timings,
    )


def _data_stats(train: DataFrame, valid: DataFrame) -> dict[str, Any]:
    row = (
        train.select(F.lit(1).alias("is_train"), "pickup_datetime")
        .unionByName(valid.select(F.lit(0).alias("is_train"), "pickup_datetime"))
        .agg(
            F.sum("is_train").alias("train_rows"),
            F.sum(1 - F.col("is_train")).alias("validation_rows"),
            F.min("pickup_datetime").alias("first_pickup"),
            F.max("pickup_datetime").alias("last_pickup"),
        )
        .first()
    )
    assert row is not None
    return {
        "train_rows": int(row["train_rows"] or 0),
        "validation_rows": int(row["validation_rows"] or 0),
        "first_pickup": row["first_pickup"].isoformat() if row["first_pickup"] else None,
        "last_pickup": row["last_pickup"].isoformat() if row["last_pickup"] else None,
    }


def _log_run(
    model: PipelineModel,
    kind: ModelKind,
    params: PipelineParams,
    tune: bool,
    tuning: dict[str, Any],
    metrics: dict[str, float],
    baseline: dict[str, float],
    data: dict[str, Any],
    scored: DataFrame,
) -> None:
    estimator = model.stages[-1]
    mlflow.set_tags({"model_kind": kind, "taxi_duration_version": __version__, "tuned": str(tune).lower()})
    mlflow.log_params(
        {
            "model_kind": kind,
            "features": ",".join(feature_columns(kind)),
            "label": "ln(duration_s)",
            "validation_fraction": params.train.validation_fraction,
            "seed": params.train.seed,
            "tune": tune,
            **{f"data_{k}": v for k, v in data.items() if not isinstance(v, list | dict)},
            **{
                f"estimator_{p.name}": v
                for p, v in estimator.extractParamMap().items()
                if p.name not in {"featuresCol", "labelCol", "predictionCol"}
            },
        }
    )
    mlflow.log_metrics({k: v for k, v in metrics.items() if k != "rows"})
    mlflow.log_metrics({f"baseline_{k}": v for k, v in baseline.items() if k != "rows"})
    mlflow.log_dict(data, "data.json")
    if tuning:
        mlflow.log_dict(tuning, "tuning.json")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = list(feature_columns(kind))
        plots.plot_feature_importance(
            names, _importances(model, kind), folder / "feature_importance.png", f"{kind} feature importance"
        )
        by_hour = (
            scored.groupBy(F.hour("pickup_datetime").alias("pickup_hour"))
            .agg(
                F.avg(F.col(PREDICTED_MINUTES) - F.col(ACTUAL_MINUTES)).alias("mean_residual"),
                F.avg(F.abs(F.col(PREDICTED_MINUTES) - F.col(ACTUAL_MINUTES))).alias("mean_abs_error"),
                F.avg(F.abs(F.col("baseline_minutes") - F.col(ACTUAL_MINUTES))).alias("baseline_mean_abs_error"),
            )
            .orderBy("pickup_hour")
            .toPandas()
        )
        plots.plot_residuals_by_hour(by_hour, folder / "residuals_by_hour.png")
        fraction = min(1.0, PLOT_SAMPLE_ROWS / max(1, int(metrics["rows"])))
        sample = (
            scored.sample(fraction=fraction, seed=params.train.seed)
            .select(ACTUAL_MINUTES, PREDICTED_MINUTES)
            .limit(PLOT_SAMPLE_ROWS)
            .toPandas()
        )
        plots.plot_predicted_vs_actual(sample, folder / "predicted_vs_actual.png")
        by_hour.to_csv(folder / "residuals_by_hour.csv", index=False)
        mlflow.log_artifacts(str(folder), "plots")


def _log_exported(model_uri: str, model_name: str, version: str, metrics: dict[str, float]) -> None:
    """Log the JVM-free form of the model (trees/coefficients as JSON) with the same run: what the API serves.

    Read from the logged MLflow artifact, not from the live model, so it works wherever the artifact store is."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
        exported = export_model(local, Path(tmp) / EXPORTED_ARTIFACT, model_name, version, metrics)
        mlflow.log_artifacts(str(exported), EXPORTED_ARTIFACT)
        log_exported_pyfunc(exported)


def _register_and_promote(
    model_uri: str,
    model_name: str,
    params: PipelineParams,
    run_id: str,
    metrics: dict[str, float],
    valid: DataFrame,
) -> tuple[str, PromotionDecision]:
    client = MlflowClient()
    aliases = params.registry
    version = str(mlflow.register_model(model_uri, model_name).version)
    client.set_registered_model_alias(model_name, aliases.challenger_alias, version)
    metric = params.train.promote_metric
    champion_version = alias_version(client, model_name, aliases.champion_alias)
    champion_score: float | None = None
    if champion_version is not None:
        # the champion is scored on this run's validation trips, so both numbers mean the same thing
        champion = load_spark_model(f"models:/{model_name}@{aliases.champion_alias}", valid.sparkSession)
        champion_score = regression_metrics(predict_minutes(champion, valid))[metric]
        mlflow.log_metric(f"champion_{metric}", champion_score)
    decision = decide_promotion(metric, metrics[metric], champion_score, champion_version)
    if decision.promote:
        client.set_registered_model_alias(model_name, aliases.champion_alias, version)
    decision_text = json.dumps(asdict(decision))
    mlflow.set_tags({"promotion_decision": decision_text, "promoted": str(decision.promote).lower()})
    client.set_model_version_tag(model_name, version, "promotion_decision", decision_text)
    client.set_model_version_tag(model_name, version, "run_id", run_id)
    for name, value in metrics.items():
        client.set_model_version_tag(model_name, version, f"validation_{name}", str(value))
    return version, decision
