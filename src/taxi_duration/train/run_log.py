"""What a train run logs to MLflow besides the model: tags, parameters, metrics (overall, baseline, per regime),
the data summary, the tuning result, the travel-time table and the diagnostic plots."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration import __version__
from taxi_duration.features.travel_times import TravelTimes
from taxi_duration.params import ModelKind, PipelineParams
from taxi_duration.train import plots
from taxi_duration.train.evaluate import ACTUAL_MINUTES, BASELINE_MINUTES, PREDICTED_MINUTES
from taxi_duration.train.pipeline import feature_columns

PLOT_SAMPLE_ROWS = 5000
PLOT_FILES = ("feature_importance.png", "residuals_by_hour.png", "predicted_vs_actual.png")


def log_run(
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
    """Tags, parameters (the estimator's too), metrics and the baseline's, data.json, tuning.json and the plots
    of the scored validation trips, on the active run."""
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
                F.avg(F.abs(F.col(BASELINE_MINUTES) - F.col(ACTUAL_MINUTES))).alias("baseline_mean_abs_error"),
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


def log_regimes(by_regime: dict[str, dict[str, float]], travel_times: TravelTimes) -> None:
    """Per-regime metrics as `<regime>_<metric>` and as one JSON; the travel-time table the model embeds."""
    mlflow.log_metrics(
        {f"{regime}_{name}": value for regime, values in by_regime.items() for name, value in values.items()}
    )
    mlflow.log_dict(by_regime, "metrics_by_regime.json")
    mlflow.log_dict(travel_times.to_json(), "travel_times.json")


def _importances(model: PipelineModel, kind: ModelKind) -> list[float]:
    last = model.stages[-1]
    if kind == "linear":
        return [abs(float(c)) for c in last.coefficients]  # type: ignore[attr-defined]
    if kind == "xgboost":  # total gain per feature, keyed f0, f1, ... in assembler order; shares as MLlib's are
        gains = last.get_booster().get_score(importance_type="total_gain")  # type: ignore[attr-defined]
        values = [float(gains.get(f"f{i}", 0.0)) for i in range(len(feature_columns(kind)))]
        total = sum(values) or 1.0
        return [v / total for v in values]
    return [float(v) for v in last.featureImportances.toArray()]  # type: ignore[attr-defined]
