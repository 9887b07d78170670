"""The train job: split, fit, evaluate against the baseline, log to MLflow, register, promote."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import reduce
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, TrainValidationSplit
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration import __version__
from taxi_duration.errors import NoDataError, TaxiDurationError
from taxi_duration.faults import crash_point
from taxi_duration.features.definitions import FEATURE_INPUT_COLUMNS, LABEL, with_features, with_label
from taxi_duration.features.travel_times import TravelTimes
from taxi_duration.params import ModelKind, PipelineParams
from taxi_duration.regimes import REGIMES
from taxi_duration.registry.promotion import (
    PromotionDecision,
    alias_version,
    decide_promotion,
    next_version,
    process_tags,
    recover_interrupted_runs,
    regime_regressions,
    register_and_promote,
)
from taxi_duration.registry.spark_model import load_spark_model, log_spark_model
from taxi_duration.serve.champion import EXPORTED_ARTIFACT, load_registered
from taxi_duration.serve.export import export_model
from taxi_duration.serve.predictor import ExportedModel, log_exported_pyfunc
from taxi_duration.train import plots
from taxi_duration.train.evaluate import (
    ACTUAL_MINUTES,
    BASELINE_MINUTES,
    PREDICTED_MINUTES,
    as_regime,
    minutes_from_log_seconds,
    regression_metrics,
    regression_metrics_by,
    with_baseline_prediction,
    zone_pair_medians,
)
from taxi_duration.train.pipeline import PREDICTION, feature_columns, model_stages, param_grid, with_feature_stage
from taxi_duration.train.split import cutoff_micros, time_split
from taxi_duration.train.travel_times import build_travel_times, with_out_of_fold

PLOT_SAMPLE_ROWS = 5000
_REGIME = "_regime"
PYFUNC_ARTIFACT = "exported_model"  # log_exported_pyfunc's default name
PLOT_FILES = ("feature_importance.png", "residuals_by_hour.png", "predicted_vs_actual.png")


class TrainCheckError(TaxiDurationError):
    """A logged model that does not load back or predicts differently: nothing is registered."""

    exit_code = 3


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
    metrics_by_regime: dict[str, dict[str, float]]
    promotion: dict[str, Any]
    data: dict[str, Any]
    seconds: dict[str, float]
    recovered_runs: list[dict[str, str]] = field(default_factory=list)

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


def mask_distance(trips: DataFrame, fraction: float, seed: int) -> DataFrame:
    """Hide the recorded distance of about `fraction` of the trips (chosen by a hash of trip_id: the same trips on
    every run and partitioning), so the model learns the zones-only and coordinates-only requests too."""
    if fraction <= 0:
        return trips
    hidden = F.pmod(F.xxhash64(F.col("trip_id"), F.lit(seed + 1)), F.lit(1_000_000)) < F.lit(int(fraction * 1e6))
    return trips.withColumn(
        "trip_distance", F.when(hidden, F.lit(None).cast("double")).otherwise(F.col("trip_distance"))
    )


def training_features(train: DataFrame, travel_times: TravelTimes, params: PipelineParams) -> DataFrame:
    """Training trips -> their feature rows: travel-time columns out of fold, then a share of distances masked."""
    p = params.train
    with_table = with_out_of_fold(train, travel_times.min_trips, p.travel_times.folds, p.seed)
    return with_features(mask_distance(with_table, p.masked_distance_fraction, p.seed), travel_times, out_of_fold=True)


def fit_model(
    train: DataFrame, kind: ModelKind, params: PipelineParams, tune: bool, travel_times: TravelTimes
) -> tuple[PipelineModel, dict]:
    """Fit assembler + regressor on the out-of-fold features; with `tune`, search the grid with
    TrainValidationSplit or CrossValidator. The result carries the feature SQL with the whole table embedded."""
    featured = training_features(train, travel_times, params).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        pipeline = model_stages(kind, params.train)
        if not tune:
            return with_feature_stage(pipeline.fit(featured), travel_times), {}
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
        search = searcher.fit(featured)
        scores: list[float] = search.avgMetrics if isinstance(search, CrossValidatorModel) else search.validationMetrics
        best_index = min(range(len(scores)), key=lambda i: scores[i])
        best = {param.name: value for param, value in grid[best_index].items()}
        tuning = {"grid_size": len(grid), "best_params": best, "best_log_rmse": scores[best_index]}
        best_model = search.bestModel
        assert isinstance(best_model, PipelineModel)
        return with_feature_stage(best_model, travel_times), tuning
    finally:
        featured.unpersist()


def metrics_by_regime(model: PipelineModel, valid_with_baseline: DataFrame) -> dict[str, dict[str, float]]:
    """The validation trips put in each regime (`evaluate.as_regime`) and scored: rmsle (minutes), rmsle_seconds,
    rmse_minutes, the zone-pair baseline's rmsle on the same trips, rows. Regimes with no trips are left out."""
    tagged = [as_regime(valid_with_baseline, r).withColumn(_REGIME, F.lit(r)) for r in REGIMES]
    scored = predict_minutes(model, reduce(DataFrame.unionByName, tagged))
    # one pass over the validation trips for the three regimes, model and baseline together
    found = regression_metrics_by(scored, _REGIME, [PREDICTED_MINUTES, BASELINE_MINUTES])
    out: dict[str, dict[str, float]] = {}
    for regime in REGIMES:
        if regime not in found:
            continue
        metrics, baseline = found[regime][PREDICTED_MINUTES], found[regime][BASELINE_MINUTES]
        out[regime] = {
            "rmsle": metrics["rmsle"],
            "rmsle_seconds": metrics["rmsle_seconds"],
            "rmse_minutes": metrics["rmse_minutes"],
            "baseline_rmsle": baseline["rmsle"],
            "rows": metrics["rows"],
        }
    return out


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
    """Train, evaluate, log and register one model; promote it if it beats the champion.

    Everything the version needs is logged and loaded back before it is registered; the champion alias moves
    last. Trains killed earlier are finished or undone first (registry/promotion.py)."""
    train_params = params.train
    timings: dict[str, float] = {}
    recovered = recover_interrupted_runs(
        MlflowClient(), experiment_id, model_name, params.registry.challenger_alias, params.registry.champion_alias
    )
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
        cutoff_text = datetime.fromtimestamp(cutoff / 1e6).isoformat()
        with _timed(timings, "travel_times"):
            travel_times = build_travel_times(
                train,
                train_params.travel_times.min_trips,
                {"first_pickup": stats["first_pickup"], "before": cutoff_text, "trips": stats["train_rows"]},
            )
        with _timed(timings, "fit"):
            model, tuning = fit_model(train, kind, params, tune, travel_times)
        with _timed(timings, "evaluate"):
            valid_with_baseline = valid.transform(with_baseline_prediction(zone_pair_medians(train))).persist(
                StorageLevel.MEMORY_AND_DISK
            )
            scored = predict_minutes(model, valid_with_baseline).persist(StorageLevel.MEMORY_AND_DISK)
            metrics = regression_metrics(scored)
            baseline = regression_metrics(scored, predicted=BASELINE_MINUTES)
            by_regime = metrics_by_regime(model, valid_with_baseline)
        data = {**data_info, **stats, "cutoff": cutoff_text, "travel_time_pairs": len(travel_times.pairs)}
        client = MlflowClient()
        aliases = params.registry
        start_tags = {**process_tags(), "taxi_duration_version": __version__}
        with mlflow.start_run(experiment_id=experiment_id, tags=start_tags) as run:
            run_id = run.info.run_id
            with _timed(timings, "log_run"):
                _log_run(model, kind, params, tune, tuning, metrics, baseline, data, scored)
                _log_regimes(by_regime, travel_times)
            crash_point("train:logged_run")
            with _timed(timings, "log_model"):
                model_uri = log_spark_model(model, trips.sparkSession)
            crash_point("train:logged_model")
            expected_version = next_version(client, model_name)
            with _timed(timings, "export"):
                _log_exported(model_uri, model_name, expected_version, metrics, by_regime)
            crash_point("train:logged_exported")
            with _timed(timings, "check"):
                _check_loadable(client, run_id, model_uri, model, valid)
            crash_point("train:checked")
            with _timed(timings, "decide"):
                decision = _decide(client, model_name, params, metrics, by_regime, valid_with_baseline)
            mlflow.log_metrics({f"seconds_{step}": value for step, value in timings.items()})
            mlflow.set_tags(
                {"promotion_decision": json.dumps(asdict(decision)), "promoted": str(decision.promote).lower()}
            )
            version = register_and_promote(
                client,
                model_uri=model_uri,
                model_name=model_name,
                run_id=run_id,
                decision=decision,
                metrics=metrics,
                challenger_alias=aliases.challenger_alias,
                champion_alias=aliases.champion_alias,
                relog_for_version=lambda v: _log_exported(model_uri, model_name, v, metrics, by_regime, pyfunc=False),
            )
        scored.unpersist()
        valid_with_baseline.unpersist()
    finally:
        train.unpersist()
        valid.unpersist()
    return TrainResult(
        run_id=run_id,
        model_name=model_name,
        model_version=version,
        model_kind=kind,
        metrics=metrics,
        baseline_metrics=baseline,
        metrics_by_regime=by_regime,
        promotion=asdict(decision),
        data=data,
        seconds=timings,
        recovered_runs=recovered,
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


def _log_regimes(by_regime: dict[str, dict[str, float]], travel_times: TravelTimes) -> None:
    """Per-regime metrics as `<regime>_<metric>` and as one JSON; the travel-time table the model embeds."""
    mlflow.log_metrics(
        {f"{regime}_{name}": value for regime, values in by_regime.items() for name, value in values.items()}
    )
    mlflow.log_dict(by_regime, "metrics_by_regime.json")
    mlflow.log_dict(travel_times.to_json(), "travel_times.json")


def _log_exported(
    model_uri: str,
    model_name: str,
    version: str,
    metrics: dict[str, float],
    by_regime: dict[str, dict[str, float]],
    *,
    pyfunc: bool = True,
) -> None:
    """Log the JVM-free form of the model (trees/coefficients as JSON) with the same run: what the API serves.

    Read from the logged MLflow artifact, not from the live model, so it works wherever the artifact store is."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
        exported = export_model(
            local, Path(tmp) / EXPORTED_ARTIFACT, model_name, version, metrics, metrics_by_regime=by_regime
        )
        mlflow.log_artifacts(str(exported), EXPORTED_ARTIFACT)
        if pyfunc:
            log_exported_pyfunc(exported)


CHECK_ROWS = 200  # validation trips predicted by each logged form before the version is registered
CHECK_TOLERANCE_MINUTES = 1e-6


def _check_loadable(client: MlflowClient, run_id: str, model_uri: str, model: PipelineModel, valid: DataFrame) -> None:
    """Load back what was logged (Spark model, exported model, pyfunc, plots) and predict real trips with each:
    a version is registered only if every form serves, and serves the same minutes as the model just fitted."""
    ids = [row["trip_id"] for row in valid.select("trip_id").limit(CHECK_ROWS).collect()]
    sample = valid.filter(F.col("trip_id").isin(ids))
    expected = predict_minutes(model, sample).select("trip_id", PREDICTED_MINUTES).toPandas()
    reloaded = predict_minutes(load_spark_model(model_uri, valid.sparkSession), sample)
    got = reloaded.select("trip_id", PREDICTED_MINUTES).toPandas()
    _same_minutes("the logged Spark model", expected, got)
    trips = sample.select(*FEATURE_INPUT_COLUMNS, "trip_id").toPandas()
    with tempfile.TemporaryDirectory() as tmp:
        folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{EXPORTED_ARTIFACT}", dst_path=tmp)
        exported = ExportedModel.load(folder)
        _same_minutes(
            "the exported model", expected, trips.assign(**{PREDICTED_MINUTES: exported.predict_batch(trips)})
        )
        pyfunc_uri = _logged_model_uri(client, run_id, PYFUNC_ARTIFACT)
        (Path(tmp) / "pyfunc").mkdir()
        saved_path = list(sys.path)  # loading puts the model's code folder (a copy of this package) first
        try:
            pyfunc = mlflow.pyfunc.load_model(pyfunc_uri, dst_path=str(Path(tmp) / "pyfunc"))
            minutes = pyfunc.predict(trips[list(FEATURE_INPUT_COLUMNS)])
        finally:
            sys.path[:] = saved_path
        _same_minutes("the pyfunc model", expected, trips.assign(**{PREDICTED_MINUTES: minutes}))
    logged = {a.path for a in client.list_artifacts(run_id, "plots")}
    missing = sorted({f"plots/{name}" for name in PLOT_FILES} - logged)
    if missing:
        raise TrainCheckError(f"run {run_id}: plots not logged: {', '.join(missing)}")


def _same_minutes(what: str, expected: pd.DataFrame, got: pd.DataFrame) -> None:
    joined = expected.merge(got[["trip_id", PREDICTED_MINUTES]], on="trip_id", suffixes=("", "_got"))
    if len(joined) != len(expected):
        raise TrainCheckError(f"{what}: predicted {len(joined)} of {len(expected)} check trips")
    gap = (joined[PREDICTED_MINUTES] - joined[f"{PREDICTED_MINUTES}_got"]).abs().max()
    if len(joined) and not gap <= CHECK_TOLERANCE_MINUTES:
        raise TrainCheckError(f"{what} predicts up to {gap:.3g} minutes away from the fitted model")


def _logged_model_uri(client: MlflowClient, run_id: str, name: str) -> str:
    """The URI of the model logged under `name` in the run (MLflow 3 logs models outside the run's folder)."""
    experiment_id = client.get_run(run_id).info.experiment_id
    for logged in client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        if logged.name == name:
            return f"models:/{logged.model_id}"
    raise TrainCheckError(f"run {run_id}: no logged model named {name}")


def _decide(
    client: MlflowClient,
    model_name: str,
    params: PipelineParams,
    metrics: dict[str, float],
    by_regime: dict[str, dict[str, float]],
    valid: DataFrame,
) -> PromotionDecision:
    """Score the champion on this run's validation trips, so both numbers mean the same thing. A champion that
    cannot be served (its exported model missing: a train killed by older versions) does not defend its place."""
    metric = params.train.promote_metric
    tolerance = params.train.promote_tolerance
    champion_version = alias_version(client, model_name, params.registry.champion_alias)
    champion_score: float | None = None
    regressions: list[str] = []
    if champion_version is not None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                load_registered(model_name, champion_version, Path(tmp))
        except Exception as exc:
            why = f"champion v{champion_version} cannot be served ({exc.__class__.__name__}); replaced"
            return PromotionDecision(True, metric, metrics[metric], None, champion_version, why, tolerance)
        champion = load_spark_model(f"models:/{model_name}@{params.registry.champion_alias}", valid.sparkSession)
        champion_score = regression_metrics(predict_minutes(champion, valid))[metric]
        mlflow.log_metric(f"champion_{metric}", champion_score)
        # ... and in every regime: a challenger worse in one of them beyond train.regime_tolerance is not promoted
        champion_by_regime = metrics_by_regime(champion, valid)
        mlflow.log_metrics({f"champion_{r}_rmsle": m["rmsle"] for r, m in champion_by_regime.items()})
        regressions = regime_regressions(by_regime, champion_by_regime, params.train.regime_tolerance)
    return decide_promotion(metric, metrics[metric], champion_score, champion_version, tolerance, regressions)
