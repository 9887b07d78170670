"""The train job: split, fit, evaluate against the baseline, log to MLflow, register, promote.

`run_train` reads top to bottom as the steps; each step's work lives with its concern: the split (split.py), the
travel-time table (travel_times.py), fitting and tuning (here), metrics (evaluate.py), what the run logs
(run_log.py), the Spark model (registry/spark_model.py) and its JVM-free export (serve/export.py), the check that
every logged form loads back (check.py), and the champion decision and registration (registry/promotion.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import reduce
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, TrainValidationSplit
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.errors import NoDataError
from taxi_duration.faults import crash_point
from taxi_duration.features.definitions import FEATURE_INPUT_COLUMNS, LABEL, with_features, with_label
from taxi_duration.features.travel_times import TravelTimes
from taxi_duration.params import ModelKind, PipelineParams
from taxi_duration.regimes import REGIMES, Regime
from taxi_duration.registry.promotion import (
    ChampionScores,
    challenge_champion,
    next_version,
    process_tags,
    recover_interrupted_runs,
    register_and_promote,
)
from taxi_duration.registry.spark_model import is_connect, load_spark_model, log_spark_model
from taxi_duration.sampling import chosen_by_trip_id, fraction_for
from taxi_duration.serve.export import log_exported_model
from taxi_duration.spark import OBJECT_AGGREGATION_IN_HASH_MAP, sql_conf
from taxi_duration.train.check import check_loadable
from taxi_duration.train.evaluate import (
    ACTUAL_MINUTES,
    BASELINE_MINUTES,
    PREDICTED_MINUTES,
    as_regime,
    predict_minutes,
    regression_metrics,
    regression_metrics_by,
    with_baseline_prediction,
    zone_pair_medians,
)
from taxi_duration.train.pipeline import (
    PREDICTION,
    model_stages,
    param_grid,
    refuse_on_connect,
    with_feature_stage,
    xgboost_workers,
)
from taxi_duration.train.run_log import log_regimes, log_run
from taxi_duration.train.split import cutoff_micros, time_split
from taxi_duration.train.travel_times import travel_times_with_out_of_fold, with_out_of_fold

_REGIME = "_regime"


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


def mask_distance(trips: DataFrame, fraction: float, seed: int) -> DataFrame:
    """Hide the recorded distance of about `fraction` of the trips (chosen by a hash of trip_id: the same trips on
    every run and partitioning), so the model learns the zones-only and coordinates-only requests too."""
    if fraction <= 0:
        return trips
    hidden = chosen_by_trip_id(fraction, seed + 1)
    return trips.withColumn(
        "trip_distance", F.when(hidden, F.lit(None).cast("double")).otherwise(F.col("trip_distance"))
    )


def training_features(
    train: DataFrame,
    travel_times: TravelTimes,
    params: PipelineParams,
    fraction: float = 1.0,
    with_table: DataFrame | None = None,
) -> DataFrame:
    """Training trips -> their feature rows: travel-time columns out of fold (`with_table`, the trips with them,
    computed here if not given), then a share of distances masked; with `fraction` < 1 a uniform sample of the
    trips, taken after the out-of-fold columns so that those are computed from every training trip, as the
    embedded table is."""
    p = params.train
    if with_table is None:
        with_table = with_out_of_fold(train, travel_times.min_trips, p.travel_times.folds, p.seed)
    featured = with_features(
        mask_distance(with_table, p.masked_distance_fraction, p.seed), travel_times, out_of_fold=True
    )
    if fraction < 1.0:  # chosen by a hash of trip_id, as the masked distances are
        featured = featured.filter(chosen_by_trip_id(fraction, p.seed + 2))
    # rows leave a shuffle in the order their blocks arrive; the estimator samples rows by position (GBT's
    # subsamplingRate), so its input is put in trip order: the same fit on every run, local, cluster or Connect
    return featured.sortWithinPartitions("trip_id")


def one_partition_per_core(df: DataFrame) -> DataFrame:
    """The estimator's input in at most one partition per core of the session. MLlib's trees run a stage per tree
    level (500 for 100 trees of depth 5) with a task per partition; tasks beyond the cores only add overhead
    (measured on 2 cores, 20 trees on 500,000 trips: 34-44 s in 2 partitions, 55-66 s in the 8 of the shuffle).
    Under Spark Connect, which has no SparkContext to ask, the frame is left as it is."""
    spark = df.sparkSession
    return df if is_connect(spark) else df.coalesce(spark.sparkContext.defaultParallelism)


def one_partition_per_worker(df: DataFrame, workers: int) -> DataFrame:
    """XGBoost's input: one partition per barrier task, by a hash of trip_id and in trip order (the same rows in
    the same order on every run). A shuffle, not a coalesce: a barrier stage refuses an RDD chain that changes the
    number of partitions (SPARK-24820), and xgboost.spark would otherwise repartition it itself."""
    return df.repartition(workers, "trip_id").sortWithinPartitions("trip_id")


def fit_model(
    train: DataFrame,
    kind: ModelKind,
    params: PipelineParams,
    tune: bool,
    travel_times: TravelTimes,
    fraction: float = 1.0,
    with_table: DataFrame | None = None,
) -> tuple[PipelineModel, dict]:
    """Fit assembler + regressor on the out-of-fold features (of a `fraction` of the trips); with `tune`, search
    the grid with TrainValidationSplit or CrossValidator. The result carries the feature SQL with the whole table
    embedded."""
    refuse_on_connect(kind, train.sparkSession)
    featured = training_features(train, travel_times, params, fraction, with_table)
    if kind == "xgboost":
        featured = one_partition_per_worker(featured, xgboost_workers(params.train))
    else:
        featured = one_partition_per_core(featured)
    featured = featured.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        pipeline = model_stages(kind, params.train)
        if not tune:
            return with_feature_stage(pipeline.fit(featured), travel_times), {}
        grid = param_grid(pipeline, kind, params.train)
        evaluator = RegressionEvaluator(labelCol=LABEL, predictionCol=PREDICTION, metricName="rmse")
        tune_params = params.train.tune
        # XGBoost fits in barrier tasks that take every task slot: two grid points at once would wait on each other
        parallelism = 1 if kind == "xgboost" else tune_params.parallelism
        searcher: TrainValidationSplit | CrossValidator
        if tune_params.method == "cross_validator":
            searcher = CrossValidator(
                estimator=pipeline,
                estimatorParamMaps=grid,
                evaluator=evaluator,
                numFolds=tune_params.num_folds,
                parallelism=parallelism,
                seed=params.train.seed,
            )
        else:
            searcher = TrainValidationSplit(
                estimator=pipeline,
                estimatorParamMaps=grid,
                evaluator=evaluator,
                trainRatio=0.8,
                parallelism=parallelism,
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


def metrics_by_regime(
    model: PipelineModel, valid_with_baseline: DataFrame, scored: DataFrame | None = None
) -> dict[str, dict[str, float]]:
    """The validation trips put in each regime (`evaluate.as_regime`) and scored: rmsle (minutes), rmsle_seconds,
    rmse_minutes, the zone-pair baseline's rmsle on the same trips, rows. Regimes with no trips are left out.

    With `scored` (the same trips already scored by `model` for the overall metrics: `predict_minutes` of
    `valid_with_baseline`), `recorded_distance` is read from it instead of scored again: that regime is the trips
    with a recorded distance, unchanged, so its predictions are the same rows' (a quarter of the scoring saved)."""
    keep = (_REGIME, PREDICTED_MINUTES, BASELINE_MINUTES, ACTUAL_MINUTES)
    reused: Regime = "recorded_distance"
    rescored = [r for r in REGIMES if scored is None or r != reused]
    tagged = [as_regime(valid_with_baseline, r).withColumn(_REGIME, F.lit(r)) for r in rescored]
    parts = [predict_minutes(model, reduce(DataFrame.unionByName, tagged)).select(*keep)]
    if scored is not None:
        parts.append(as_regime(scored, reused).withColumn(_REGIME, F.lit(reused)).select(*keep))
    # one pass over the validation trips for the three regimes, model and baseline together
    found = regression_metrics_by(reduce(DataFrame.unionByName, parts), _REGIME, [PREDICTED_MINUTES, BASELINE_MINUTES])
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
    refuse_on_connect(kind, trips.sparkSession)
    train_params = params.train
    aliases = params.registry
    client = MlflowClient()
    timings: dict[str, float] = {}
    recovered = recover_interrupted_runs(
        client, experiment_id, model_name, aliases.challenger_alias, aliases.champion_alias
    )
    # only the columns the pipeline reads are cached (a third of the canonical row), once: the cutoff is the one
    # read of the trips table, and both sides of the split are filters of the cached rows
    labeled = (
        training_frame(trips, train_params.sample_fraction, train_params.seed, pickup_window)
        .select(*MODEL_INPUT_COLUMNS)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        with _timed(timings, "split"):
            cutoff = cutoff_micros(labeled, train_params.validation_fraction)
        train, valid = time_split(labeled, cutoff)
        with _timed(timings, "counts"):
            stats = _data_stats(train, valid)
        if stats["train_rows"] == 0 or stats["validation_rows"] == 0:
            raise NoDataError(
                f"not enough trips to split by time: {stats['train_rows']} before and "
                f"{stats['validation_rows']} after the cutoff; ingest more data"
            )
        cutoff_text = datetime.fromtimestamp(cutoff / 1e6).isoformat()
        with _timed(timings, "travel_times"):
            travel_times, with_table = travel_times_with_out_of_fold(
                train,
                train_params.travel_times.min_trips,
                train_params.travel_times.folds,
                train_params.seed,
                {"first_pickup": stats["first_pickup"], "before": cutoff_text, "trips": stats["train_rows"]},
            )
        fraction = fraction_for(stats["train_rows"], train_params.max_fit_trips)
        with _timed(timings, "fit"):
            model, tuning = fit_model(train, kind, params, tune, travel_times, fraction, with_table)
        eval_fraction = fraction_for(stats["validation_rows"], train_params.max_eval_trips)
        evaluated = (
            valid if eval_fraction >= 1.0 else valid.filter(chosen_by_trip_id(eval_fraction, train_params.seed + 3))
        )
        with _timed(timings, "evaluate"):
            with sql_conf(trips.sparkSession, OBJECT_AGGREGATION_IN_HASH_MAP):
                medians = zone_pair_medians(train).persist(StorageLevel.MEMORY_AND_DISK)  # planned with the setting
                medians.count()
            valid_with_baseline = evaluated.transform(with_baseline_prediction(medians)).persist(
                StorageLevel.MEMORY_AND_DISK
            )
            scored = predict_minutes(model, valid_with_baseline).persist(StorageLevel.MEMORY_AND_DISK)
            metrics = regression_metrics(scored)
            baseline = regression_metrics(scored, predicted=BASELINE_MINUTES)
            by_regime = metrics_by_regime(model, valid_with_baseline, scored)
        data = {
            **data_info,
            **stats,
            "fit_fraction": round(fraction, 6),
            "eval_fraction": round(eval_fraction, 6),
            "cutoff": cutoff_text,
            "travel_time_pairs": len(travel_times.pairs),
        }
        with mlflow.start_run(experiment_id=experiment_id, tags=process_tags()) as run:
            run_id = run.info.run_id
            with _timed(timings, "log_run"):
                log_run(model, kind, params, tune, tuning, metrics, baseline, data, scored)
                log_regimes(by_regime, travel_times)
            crash_point("train:logged_run")
            with _timed(timings, "log_model"):
                model_uri = log_spark_model(model, trips.sparkSession)
            crash_point("train:logged_model")
            expected_version = next_version(client, model_name)
            with _timed(timings, "export"):
                log_exported_model(model_uri, model_name, expected_version, metrics, by_regime)
            crash_point("train:logged_exported")
            with _timed(timings, "check"):
                check_loadable(client, run_id, model_uri, model, valid)
            crash_point("train:checked")
            with _timed(timings, "decide"):
                score_champion = _champion_scorer(valid_with_baseline)
                decision = challenge_champion(client, model_name, params, metrics, by_regime, score_champion)
            mlflow.log_metrics({f"seconds_{step}": value for step, value in timings.items()})
            version = register_and_promote(
                client,
                model_uri=model_uri,
                model_name=model_name,
                run_id=run_id,
                decision=decision,
                metrics=metrics,
                challenger_alias=aliases.challenger_alias,
                champion_alias=aliases.champion_alias,
                relog_for_version=lambda v: log_exported_model(
                    model_uri, model_name, v, metrics, by_regime, pyfunc=False
                ),
            )
        scored.unpersist()
        valid_with_baseline.unpersist()
        medians.unpersist()
    finally:
        labeled.unpersist()
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


def _champion_scorer(valid: DataFrame) -> Callable[[str], ChampionScores]:
    """How the registry has the champion scored: on this run's validation trips, as the challenger was."""

    def score(model_uri: str) -> ChampionScores:
        champion = load_spark_model(model_uri, valid.sparkSession)
        scored = predict_minutes(champion, valid).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            return regression_metrics(scored), metrics_by_regime(champion, valid, scored)
        finally:
            scored.unpersist()

    return score


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
