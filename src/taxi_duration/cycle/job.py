"""`taxi-duration cycle FILE...`: one idempotent step for a scheduler (cron, systemd timer, a Databricks job).

ingest the files not seen before -> score their trips with the champion (appended to `predictions`, trips it
already scored are skipped) -> monitor their months against the champion's training window -> on an alert (or
--force) train a challenger on the newest `train.window_months` months; `train` promotes it only if it beats the
champion on the newest trips (its validation split).

Idempotence: `WORKSPACE/cycle/state.json` records each file's fingerprint (resolved path, size, modification time)
once it is ingested, and the window still to be monitored until the cycle has finished with it; the state file is
replaced atomically. The same files a second time find nothing new and change nothing (no ingest, no MLflow run,
no monitoring rows). A cycle interrupted after ingesting resumes at the monitor step on the next run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from taxi_duration.ingest.job import run_ingest
from taxi_duration.ingest.readers import expand_sources
from taxi_duration.lakehouse import read_trips
from taxi_duration.monitor.command import monitor_command, read_optional_parquet
from taxi_duration.monitor.quality import MEDIAN_DAY, source_day_counts, source_median_days
from taxi_duration.params import PipelineParams
from taxi_duration.registry.promotion import alias_version
from taxi_duration.registry.spark_model import load_spark_model
from taxi_duration.score.batch import with_predictions
from taxi_duration.settings import Settings
from taxi_duration.tracking import configure_mlflow
from taxi_duration.train.job import run_train

STATE_VERSION = 1
# a month holding less than this share of the busiest month's trips is stray records (TLC files carry a few trips
# dated years away), not a month of data
MIN_MONTH_SHARE = 0.01


@dataclass
class CycleResult:
    ingested: list[str]
    skipped_files: list[str]
    scored: int
    monitor: dict[str, Any] | None
    retrained: bool
    promoted: bool
    champion_version: str | None
    window: dict[str, str] | None = None
    train: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(path: str) -> str:
    """Resolved path, size and modification time: a file replaced by a new download is new."""
    stat = os.stat(path)
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _folder_fingerprint(path: str) -> str:
    target = Path(path)
    if target.is_dir():
        parts = sorted(fingerprint(str(p)) for p in target.rglob("*") if p.is_file())
        return f"{target.resolve()}:[{';'.join(parts)}]"
    return fingerprint(path)


class CycleState:
    def __init__(self, path: Path) -> None:
        self.path = path
        data: dict[str, Any] = {}
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
        self.files: dict[str, str] = dict(data.get("files", {}))
        self.pending: dict[str, str] | None = data.get("pending")

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(".json.tmp")
        payload = {"version": STATE_VERSION, "files": self.files, "pending": self.pending}
        staged.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        staged.replace(self.path)


def month_start(value: datetime) -> datetime:
    return datetime(value.year, value.month, 1)


def add_months(value: datetime, months: int) -> datetime:
    index = value.year * 12 + value.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1)


def months_of_sources(trips: DataFrame, source_ids: list[str]) -> tuple[datetime, datetime] | None:
    """The months covered by these sources: from the month of the earliest source median pickup to the end of the
    latest one's (a monthly TLC file is its month, whatever stray dates it carries; the median's day is enough)."""
    medians = (
        source_median_days(source_day_counts(trips.filter(F.col("source").isin(source_ids))))
        .agg(F.min(MEDIAN_DAY).alias("first"), F.max(MEDIAN_DAY).alias("last"))
        .first()
    )
    if medians is None or medians["first"] is None:
        return None
    return month_start(medians["first"]), add_months(month_start(medians["last"]), 1)


def recent_months(trips: DataFrame, months: int) -> tuple[datetime, datetime] | None:
    """The newest `months` months holding real data (a month with under MIN_MONTH_SHARE of the busiest month's
    trips is strays), as a half-open window."""
    counts = trips.groupBy(F.date_trunc("month", "pickup_datetime").alias("month")).count().collect()
    if not counts:
        return None
    busiest = max(int(row["count"]) for row in counts)
    real = sorted(
        row["month"] for row in counts if row["month"] is not None and row["count"] >= busiest * MIN_MONTH_SHARE
    )
    newest = real[-1]
    return add_months(newest, 1 - months), add_months(newest, 1)


def score_new_trips(
    trips: DataFrame, predictions: DataFrame | None, model_name: str, version: str, target: Path
) -> int:
    """Append predictions of `version` for the trips that have none yet; the number appended."""
    todo = trips
    if predictions is not None:
        done = predictions.filter(
            (F.col("model_name") == F.lit(model_name)) & (F.col("model_version") == F.lit(version))
        ).select("trip_id")
        todo = trips.join(done, on="trip_id", how="left_anti")
    model = load_spark_model(f"models:/{model_name}/{version}", trips.sparkSession)
    scored = todo.transform(with_predictions(model, model_name, version)).persist()
    try:
        rows = scored.count()
        if rows:
            scored.write.mode("append").parquet(str(target))
    finally:
        scored.unpersist()
    return rows


def run_cycle(
    spark: SparkSession,
    settings: Settings,
    params: PipelineParams,
    files: list[str],
    *,
    force: bool,
    window: str,
    log: Callable[[str], None],
    retrain: bool = True,
) -> CycleResult:
    """One cycle; see the module docstring."""
    state = CycleState(settings.workspace / "cycle" / "state.json")
    configure_mlflow(settings)
    sources = expand_sources(files)
    seen = {s.path: _folder_fingerprint(s.path) for s in sources if "://" not in s.path or s.path.startswith("file:")}
    new = [s for s in sources if state.files.get(s.path) != seen.get(s.path, s.path)]
    skipped = [s.path for s in sources if s not in new]
    result = CycleResult(
        ingested=[],
        skipped_files=skipped,
        scored=0,
        monitor=None,
        retrained=False,
        promoted=False,
        champion_version=alias_version(MlflowClient(), settings.model_name, params.registry.champion_alias),
    )
    if new:
        log(f"ingesting {len(new)} new file(s); {len(skipped)} already ingested")
        run_ingest(
            spark,
            [s.path for s in new],
            settings.trips_path,
            settings.quarantine_path,
            params.quality,
            settings.reports_path / "quality_report.json",
        )
        trips = read_trips(spark, settings.trips_path)
        months = months_of_sources(trips, [s.source_id for s in new])
        if months is not None:
            # merge with a window left pending by an interrupted cycle
            if state.pending:
                months = (
                    min(months[0], datetime.fromisoformat(state.pending["from"])),
                    max(months[1], datetime.fromisoformat(state.pending["to"])),
                )
            state.pending = {"from": months[0].isoformat(), "to": months[1].isoformat()}
        for s in new:
            state.files[s.path] = seen.get(s.path, s.path)
        state.save()
        result.ingested = [s.path for s in new]
    else:
        log(f"no new files ({len(skipped)} already ingested)")

    if state.pending is None and not force:
        return result
    trips = read_trips(spark, settings.trips_path)
    if state.pending is not None:
        current = (datetime.fromisoformat(state.pending["from"]), datetime.fromisoformat(state.pending["to"]))
    else:
        latest = recent_months(trips, 1)
        assert latest is not None
        current = latest
    result.window = {"from": current[0].isoformat(), "to": current[1].isoformat()}
    champion = result.champion_version
    alert = False
    if champion is None:
        result.notes.append("no champion yet: training the first one")
    else:
        in_window = trips.filter(
            (F.col("pickup_datetime") >= F.lit(current[0].isoformat(sep=" ")).cast("timestamp"))
            & (F.col("pickup_datetime") < F.lit(current[1].isoformat(sep=" ")).cast("timestamp"))
        )
        result.scored = score_new_trips(
            in_window,
            read_optional_parquet(spark, settings.predictions_path),
            settings.model_name,
            champion,
            settings.predictions_path,
        )
        log(f"scored {result.scored:,} new trip(s) with v{champion}")
        monitored = monitor_command(
            settings,
            params,
            start=current[0],
            end=current[1],
            reference_from=None,
            reference_to=None,
            alias=params.registry.champion_alias,
            window=window,
            source="trips",
            spark=spark,
        )
        result.monitor = {
            key: value
            for key, value in monitored.to_dict().items()
            if key
            in (
                "alert",
                "reasons",
                "rows_current",
                "rows_reference",
                "drifted_features",
                "prediction_psi",
                "realized",
                "run_id",
                "report_path",
            )
        }
        alert = monitored.alert
        log(f"monitor: {'ALERT: ' + '; '.join(monitored.reasons) if alert else 'no alert'}")

    if retrain and (alert or force or champion is None):
        window_months = params.train.window_months
        train_window = recent_months(trips, window_months) if window_months else None
        experiment_id = configure_mlflow(settings)
        trained = run_train(
            trips,
            kind=params.train.model,
            params=params,
            tune=False,
            model_name=settings.model_name,
            experiment_id=experiment_id,
            data_info={
                "trips_path": str(settings.trips_path),
                **(
                    {"window_from": train_window[0].isoformat(), "window_to": train_window[1].isoformat()}
                    if train_window
                    else {}
                ),
                "trigger": "force" if force and not alert else ("alert" if alert else "no champion"),
            },
            pickup_window=train_window,
        )
        result.retrained = True
        result.promoted = bool(trained.promotion["promote"])
        result.train = {
            "model_version": trained.model_version,
            "run_id": trained.run_id,
            "metrics": trained.metrics,
            "promotion": trained.promotion,
            "window": {"from": train_window[0].isoformat(), "to": train_window[1].isoformat()}
            if train_window
            else None,
        }
        log(f"trained v{trained.model_version}: {trained.promotion['reason']}")
    result.champion_version = alias_version(MlflowClient(), settings.model_name, params.registry.champion_alias)
    state.pending = None
    state.save()
    return result
