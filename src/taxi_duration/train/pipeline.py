"""Spark ML pipelines: features (SQLTransformer) -> VectorAssembler -> regressor on ln(duration); the regressor is
MLlib's, or XGBoost's Spark estimator (classic sessions only)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pyspark.ml import Estimator, Pipeline, PipelineModel
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.ml.param import Param
from pyspark.ml.regression import GBTRegressor, LinearRegression, RandomForestRegressor
from pyspark.ml.tuning import ParamGridBuilder
from pyspark.sql import SparkSession

from taxi_duration.columns import PREDICTION
from taxi_duration.errors import ConfigError
from taxi_duration.features.definitions import CLASSIC_FEATURE_COLUMNS, FEATURE_COLUMNS, LABEL, feature_sql
from taxi_duration.features.travel_times import TravelTimes
from taxi_duration.params import ModelKind, TrainParams
from taxi_duration.registry.spark_model import is_connect

if TYPE_CHECKING:
    from xgboost.spark import SparkXGBRegressor

FEATURES_VECTOR = "features"


def feature_columns(kind: ModelKind) -> tuple[str, ...]:
    """The columns a model kind sees: all features, or the classic three for the course RF pipeline."""
    return CLASSIC_FEATURE_COLUMNS if kind == "rf" else FEATURE_COLUMNS


def refuse_on_connect(kind: str, spark: SparkSession) -> None:
    """XGBoost's Spark estimator runs barrier tasks through the SparkContext, which a Spark Connect client does not
    have: say so in one line before any work."""
    if kind == "xgboost" and is_connect(spark):
        raise ConfigError(
            "--model xgboost: XGBoost's Spark estimator needs a classic session (local, standalone or "
            "spark-submit); under Spark Connect use --model gbt"
        )


def xgboost_workers(params: TrainParams) -> int:
    """XGBoost's barrier tasks: `train.xgboost.num_workers`, or the active session's default parallelism (its cores
    on local[N] and standalone; one task slot each with spark.task.cpus = 1)."""
    workers = params.xgboost.get("num_workers")
    if workers is not None:
        return int(workers)
    spark = SparkSession.getActiveSession()
    return spark.sparkContext.defaultParallelism if spark is not None else 1


def _xgboost(params: TrainParams) -> SparkXGBRegressor:
    """SparkXGBRegressor on the assembled vector: NULL features arrive as NaN, XGBoost's `missing` (the default),
    and go to each split's learned default side. num_workers (barrier tasks, at most the task slots) defaults to the
    session's default parallelism; training logs are off (`verbose`). Its model scores in Spark through
    xgboost.spark's pandas UDF (the one Python UDF of the pipeline, XGBoost's own; the API uses the JSON export)."""
    try:
        from xgboost.spark import SparkXGBRegressor
    except ImportError:
        raise ConfigError(
            "--model xgboost needs the xgboost package: pip install 'taxi-duration-predictor[xgboost]'"
        ) from None
    # its INFO lines (parameters, "Do the inference on the CPUs" per scoring job) on stderr, workers included
    logging.getLogger("XGBoost-PySpark").setLevel(logging.WARNING)
    settings = {**params.xgboost, "num_workers": xgboost_workers(params)}
    return SparkXGBRegressor(
        features_col=FEATURES_VECTOR,
        label_col=LABEL,
        prediction_col=PREDICTION,
        random_state=params.seed,
        verbose=False,
        **settings,
    )


def _estimator(kind: ModelKind, params: TrainParams) -> Estimator:
    common: dict[str, Any] = {"featuresCol": FEATURES_VECTOR, "labelCol": LABEL, "predictionCol": PREDICTION}
    if kind == "xgboost":
        return _xgboost(params)
    if kind == "gbt":
        return GBTRegressor(**common, seed=params.seed, **params.gbt)
    if kind == "rf":
        return RandomForestRegressor(**common, seed=params.seed, **params.rf)
    return LinearRegression(**common, **params.linear)


def model_stages(kind: ModelKind, params: TrainParams) -> Pipeline:
    """Assembler -> regressor over trips that already carry their features (fitted on out-of-fold features)."""
    return Pipeline(
        stages=[
            VectorAssembler(inputCols=list(feature_columns(kind)), outputCol=FEATURES_VECTOR, handleInvalid="keep"),
            _estimator(kind, params),
        ]
    )


def with_feature_stage(fitted: PipelineModel, travel_times: TravelTimes | None) -> PipelineModel:
    """The model users get: the feature SQL (the travel-time table embedded) in front of the fitted stages, so it
    takes canonical trips."""
    return PipelineModel(stages=[SQLTransformer(statement=feature_sql(travel_times)), *fitted.stages])


def build_pipeline(kind: ModelKind, params: TrainParams, travel_times: TravelTimes | None = None) -> Pipeline:
    """A pipeline that takes canonical trips (with `label` for fitting) and adds `prediction` (ln seconds); its
    pair features read `travel_times` in-sample (tests and small fits; `train` fits out of fold)."""
    return Pipeline(
        stages=[SQLTransformer(statement=feature_sql(travel_times)), *model_stages(kind, params).getStages()]
    )


def param_grid(pipeline: Pipeline, kind: ModelKind, params: TrainParams) -> list[dict[Param, Any]]:
    """The tuning grid for the pipeline's regressor, from `train.tune.grid.<kind>` in the parameters file."""
    estimator = pipeline.getStages()[-1]
    builder = ParamGridBuilder()
    for name, values in params.tune.grid.get(kind, {}).items():
        builder = builder.addGrid(estimator.getParam(name), values)
    return builder.build()
