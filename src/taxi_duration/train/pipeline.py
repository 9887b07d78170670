"""MLlib pipelines: features (SQLTransformer) -> VectorAssembler -> regressor on ln(duration)."""

from __future__ import annotations

from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.ml.param import Param
from pyspark.ml.regression import GBTRegressor, LinearRegression, RandomForestRegressor
from pyspark.ml.tuning import ParamGridBuilder

from taxi_duration.columns import PREDICTION
from taxi_duration.features.definitions import CLASSIC_FEATURE_COLUMNS, FEATURE_COLUMNS, LABEL, feature_sql
from taxi_duration.features.travel_times import TravelTimes
from taxi_duration.params import ModelKind, TrainParams

FEATURES_VECTOR = "features"


def feature_columns(kind: ModelKind) -> tuple[str, ...]:
    """The columns a model kind sees: all features, or the classic three for the course RF pipeline."""
    return CLASSIC_FEATURE_COLUMNS if kind == "rf" else FEATURE_COLUMNS


def _estimator(kind: ModelKind, params: TrainParams) -> GBTRegressor | RandomForestRegressor | LinearRegression:
    common: dict[str, Any] = {"featuresCol": FEATURES_VECTOR, "labelCol": LABEL, "predictionCol": PREDICTION}
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
