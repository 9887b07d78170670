"""The stream job: landing files -> predictions + quarantine (exactly once) and live borough x window counts.

Two Structured Streaming queries share the workspace's `stream/` folder:

1. `score`: the landing folder (text source, checkpointed) -> `foreachBatch`. Each micro-batch is parsed,
   normalised and classified with the batch ingest code, scored with the champion (the alias is checked at the
   start of every batch and the model reloaded when it moved), and committed: predictions and quarantine are
   written to a staging folder and renamed into `predictions/batch_id=N` and `quarantine/batch_id=N`. The
   checkpoint replays an unfinished batch with the same files after a crash; a batch whose `predictions/batch_id=N`
   already exists was committed and is not written again. So each landed trip is in exactly one batch's output.
2. `windows`: the predictions table as a file stream -> event-time watermark -> count and means per pickup borough
   and 5-minute window, in update mode; each batch's changed windows go to `borough_windows/batch_id=N`, and the
   current value of a window is its row with the highest batch id (`read_borough_windows`). Reading the committed
   predictions (renamed in whole, never rewritten) keeps the counts exactly-once as well.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.dataset as pads
from mlflow.tracking import MlflowClient
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from taxi_duration.errors import ConfigError, ModelNotFoundError
from taxi_duration.params import QualityParams
from taxi_duration.quality.rules import REASON, to_quarantine
from taxi_duration.registry.promotion import alias_version
from taxi_duration.registry.spark_model import is_connect, load_spark_model
from taxi_duration.schema import QUARANTINE_SCHEMA, TRIP_COLUMNS
from taxi_duration.score.batch import with_predictions
from taxi_duration.stream.sources import (
    LANDED_AT,
    BatchClassifier,
    batch_files,
    landing_stream,
    landing_times,
    plan_files,
)
from taxi_duration.zones import zones_frame

BATCH_ID = "batch_id"
SCORE_QUERY = "taxi_duration_score"
WINDOWS_QUERY = "taxi_duration_windows"

# What the stream writes per trip: the batch score columns, plus where and when the trip landed.
PREDICTIONS_SCHEMA = StructType(
    [
        StructField("trip_id", LongType(), False),
        StructField("service", StringType(), False),
        StructField("pickup_datetime", TimestampType(), True),
        StructField("pickup_location_id", IntegerType(), True),
        StructField("dropoff_location_id", IntegerType(), True),
        StructField("trip_distance", DoubleType(), True),
        StructField("predicted_duration_minutes", DoubleType(), True),
        StructField("actual_duration_minutes", DoubleType(), True),
        StructField("model_name", StringType(), False),
        StructField("model_version", StringType(), False),
        StructField("source_file", StringType(), False),
        StructField(LANDED_AT, TimestampType(), True),
    ]
)
PREDICTIONS_TABLE_SCHEMA = StructType([*PREDICTIONS_SCHEMA.fields, StructField(BATCH_ID, LongType(), True)])

WINDOWS_SCHEMA = StructType(
    [
        StructField("window_start", TimestampType(), False),
        StructField("window_end", TimestampType(), False),
        StructField("pickup_borough", StringType(), False),
        StructField("trips", LongType(), False),
        StructField("mean_predicted_minutes", DoubleType(), True),
        StructField("trips_with_actual", LongType(), False),
        StructField("mean_actual_minutes", DoubleType(), True),
    ]
)


@dataclass(frozen=True)
class StreamPaths:
    """Where the stream reads and writes, all under `WORKSPACE/stream/` unless the landing folder is given."""

    root: Path
    landing: Path

    @classmethod
    def under(cls, workspace: Path, landing: Path | None = None) -> StreamPaths:
        root = (workspace / "stream").resolve()
        return cls(root=root, landing=(landing or root / "landing").resolve())

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def borough_windows(self) -> Path:
        return self.root / "borough_windows"

    @property
    def commits(self) -> Path:
        return self.root / "commits"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def progress(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def skipped_files(self) -> Path:
        return self.root / "skipped_files.jsonl"

    def checkpoint(self, query: str) -> Path:
        return self.root / "checkpoints" / query

    def make(self) -> None:
        for folder in (self.landing, self.predictions, self.quarantine, self.borough_windows, self.commits):
            folder.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class StreamOptions:
    trigger_seconds: float = 2.0
    # The live counts are refreshed less often than predictions are committed: a windows micro-batch costs
    # about as much as a score one however few rows it has, and both share the driver and the cores.
    windows_trigger_seconds: float = 10.0
    available_now: bool = False
    max_files_per_trigger: int | None = None
    watermark: str = "10 minutes"
    window: str = "5 minutes"
    timeout_seconds: float | None = None  # stop (gracefully) after this long; None: until stopped
    alias: str = "champion"
    # Landed files after processing: "off" (left in place), "archive" (moved under `archive_dir`, keeping their
    # full path) or "delete". Spark does it for a batch's files when the next batch starts, never before its
    # commit, so a batch replayed after a crash still finds its files.
    clean_source: str = "off"
    archive_dir: Path | None = None


class ChampionTracker:
    """The model behind `models:/<name>@<alias>`, reloaded when the alias moves (checked once per batch).

    It carries the MLflow wiring it was made under (tracking and registry URIs, DFS temp folder): through Spark
    Connect the score function is pickled and runs in a Python worker of the server, where the tracker is
    unpickled without its model and loads it there on the first batch."""

    def __init__(self, model_name: str, alias: str) -> None:
        self.model_name = model_name
        self.alias = alias
        self.version: str | None = None
        self._model: PipelineModel | None = None
        self._tracking_uri: str = mlflow.get_tracking_uri()
        self._registry_uri: str = mlflow.get_registry_uri()
        self._dfs_tmp = os.environ.get("MLFLOW_DFS_TMP")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "version": None, "_model": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        mlflow.set_tracking_uri(self._tracking_uri)
        mlflow.set_registry_uri(self._registry_uri)
        if self._dfs_tmp:
            os.environ.setdefault("MLFLOW_DFS_TMP", self._dfs_tmp)

    def current_version(self) -> str | None:
        return alias_version(MlflowClient(), self.model_name, self.alias)

    def current(self, spark: SparkSession) -> tuple[PipelineModel, str]:
        version = self.current_version()
        if version is None and self._model is None:
            raise ModelNotFoundError(
                f"models:/{self.model_name}@{self.alias}: no such registered model or alias; "
                "run `taxi-duration train` first"
            )
        if version is not None and version != self.version:
            self._model = load_spark_model(f"models:/{self.model_name}/{version}", spark)
            self.version = version
        assert self._model is not None and self.version is not None
        return self._model, self.version


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _append_json_line(path: Path, payload: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(payload, default=str) + "\n")


def _publish(staged: Path, final: Path) -> None:
    """Make a fully written batch folder visible in one rename (same file system)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, final)


@dataclass
class BatchRecord:
    """What one committed micro-batch of the score query did (`commits/N.json`)."""

    batch_id: int
    committed_at: float  # epoch seconds, after the predictions folder was renamed into place
    started_at: float
    model_version: str
    files: int
    trips: int
    quarantined: int
    by_reason: dict[str, int]
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # where the batch's time went, by phase
    recovered: bool = False  # rebuilt from output committed just before a crash (not scored by this run)


class ScoreBatch:
    """The `foreachBatch` function of the score query: classify, score, commit once per batch id.

    Everything it reports goes into `commits/N.json` (and `skipped_files.jsonl`), which the driver program reads
    (`CommitLog`): through Spark Connect this object runs pickled in a Python worker of the server, whose output
    and memory the client never sees."""

    def __init__(self, paths: StreamPaths, quality: QualityParams, tracker: ChampionTracker) -> None:
        self.paths = paths
        self.quality = quality
        self.tracker = tracker
        self._classifier: BatchClassifier | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_classifier": None}  # its prebuilt columns belong to one session

    @property
    def classifier(self) -> BatchClassifier:
        if self._classifier is None:
            self._classifier = BatchClassifier(self.quality)
        return self._classifier

    def __call__(self, lines: DataFrame, batch_id: int) -> None:
        spark = lines.sparkSession
        if is_connect(spark):
            # the worker is a Spark Connect client too: the same ML-finalizer deadlock as in `remote_session`
            gc.disable()
        final = self.paths.predictions / f"{BATCH_ID}={batch_id}"
        if final.exists():
            # committed before the process stopped, but the checkpoint had not recorded it yet
            if not (self.paths.commits / f"{batch_id}.json").exists():
                self._recover_record(batch_id, final)
            return
        started = time.time()
        lines = lines.persist()
        try:
            self._score(spark, lines, batch_id, started)
        finally:
            lines.unpersist()

    def _recover_record(self, batch_id: int, final: Path) -> None:
        """The commit record of a batch whose output was renamed into place just before a crash, rebuilt from
        that output (commit time: the folder's rename time)."""
        quarantine = self.paths.quarantine / f"{BATCH_ID}={batch_id}"
        trips, by_reason = _written_counts(final, quarantine)
        written = pads.dataset(final, format="parquet").to_table(columns=["model_version", "source_file"])
        versions = sorted(set(written.column("model_version").to_pylist()))
        sources = set(written.column("source_file").to_pylist())
        sources |= set(pads.dataset(quarantine, format="parquet").to_table(columns=["source_file"])[0].to_pylist())
        committed = final.stat().st_mtime
        record = BatchRecord(
            batch_id=batch_id,
            committed_at=committed,
            started_at=committed,
            model_version=versions[0] if versions else (self.tracker.version or ""),
            files=len(sources),
            trips=trips,
            quarantined=sum(by_reason.values()),
            by_reason=by_reason,
            recovered=True,
        )
        _write_json_atomically(self.paths.commits / f"{batch_id}.json", asdict(record))

    def _score(self, spark: SparkSession, lines: DataFrame, batch_id: int, started: float) -> None:
        seconds: dict[str, float] = {}
        mark = time.time()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.time()
            seconds[name] = round(now - mark, 3)
            mark = now

        landed, json_keys = batch_files(lines)
        files, skipped = plan_files(spark, landed, json_keys)
        phase("read_and_plan")
        for entry in skipped:
            _append_json_line(self.paths.skipped_files, {"batch_id": batch_id, **asdict(entry)})
        model, version = self.tracker.current(spark)
        phase("champion_check")
        staged_predictions = self.paths.staging / "predictions" / f"{BATCH_ID}={batch_id}"
        staged_quarantine = self.paths.staging / "quarantine" / f"{BATCH_ID}={batch_id}"
        classified = self.classifier(lines, files)
        phase("classify")
        if classified is None:
            spark.createDataFrame([], PREDICTIONS_SCHEMA).write.mode("overwrite").parquet(str(staged_predictions))
            spark.createDataFrame([], QUARANTINE_SCHEMA).write.mode("overwrite").parquet(str(staged_quarantine))
        else:
            # cached: the predictions write classifies the batch once, the quarantine write reads the result
            classified = classified.persist()
            try:
                micros = landing_times(landed)
                landed_at = F.timestamp_micros(
                    F.element_at(
                        F.create_map(*[F.lit(v) for path, m in micros.items() for v in (path, m)]),
                        F.col("source_file"),
                    )
                )
                clean = classified.filter(F.col(REASON).isNull()).select(*TRIP_COLUMNS, landed_at.alias(LANDED_AT))
                predictions = clean.transform(
                    with_predictions(model, self.tracker.model_name, version, keep=("source_file", LANDED_AT))
                )
                predictions.select(*[F.col(f.name).cast(f.dataType) for f in PREDICTIONS_SCHEMA.fields]).write.mode(
                    "overwrite"
                ).parquet(str(staged_predictions))
                phase("score_and_write")
                to_quarantine(classified).write.mode("overwrite").parquet(str(staged_quarantine))
                phase("write_quarantine")
            finally:
                classified.unpersist()
        trips, by_reason = _written_counts(staged_predictions, staged_quarantine)
        phase("count")
        # quarantine first: the predictions folder appearing is what marks the batch as committed
        _publish(staged_quarantine, self.paths.quarantine / f"{BATCH_ID}={batch_id}")
        _publish(staged_predictions, self.paths.predictions / f"{BATCH_ID}={batch_id}")
        phase("commit")
        record = BatchRecord(
            batch_id=batch_id,
            committed_at=time.time(),
            started_at=started,
            model_version=version,
            files=len(files),
            trips=trips,
            quarantined=sum(by_reason.values()),
            by_reason=by_reason,
            skipped_files=[asdict(entry) for entry in skipped],
            seconds=seconds,
        )
        _write_json_atomically(self.paths.commits / f"{batch_id}.json", asdict(record))


def _written_counts(predictions: Path, quarantine: Path) -> tuple[int, dict[str, int]]:
    """Trips scored and rows quarantined by reason, read from the batch's staged output (Parquet footers and the
    reason column): what the commit record says is what was written, and no Spark job is spent counting."""
    trips = pads.dataset(predictions, format="parquet").count_rows()
    reasons = pads.dataset(quarantine, format="parquet").to_table(columns=[REASON]).column(REASON)
    counts = reasons.value_counts().to_pylist() if len(reasons) else []
    return trips, {str(item["values"]): int(item["counts"]) for item in sorted(counts, key=lambda i: i["values"])}


def borough_window_counts(zones: DataFrame, watermark: str, window: str) -> Callable[[DataFrame], DataFrame]:
    """Predictions (stream) -> trips, mean predicted and mean actual minutes per pickup borough and event-time
    window; trips older than the watermark (max pickup time seen minus `watermark`) are left out."""
    boroughs = zones.select(F.col("location_id").alias("pickup_location_id"), F.col("borough").alias("pickup_borough"))

    def step(predictions: DataFrame) -> DataFrame:
        return (
            predictions.withWatermark("pickup_datetime", watermark)
            .join(F.broadcast(boroughs), on="pickup_location_id", how="left")
            .groupBy(
                F.window("pickup_datetime", window).alias("window"),
                F.coalesce(F.col("pickup_borough"), F.lit("Unknown")).alias("pickup_borough"),
            )
            .agg(
                F.count(F.lit(1)).alias("trips"),
                F.avg("predicted_duration_minutes").alias("mean_predicted_minutes"),
                F.count("actual_duration_minutes").alias("trips_with_actual"),
                F.avg("actual_duration_minutes").alias("mean_actual_minutes"),
            )
            .select(
                F.col("window.start").alias("window_start"),
                F.col("window.end").alias("window_end"),
                "pickup_borough",
                "trips",
                "mean_predicted_minutes",
                "trips_with_actual",
                "mean_actual_minutes",
            )
        )

    return step


class WindowsBatch:
    """The `foreachBatch` function of the windows query: the windows this batch changed, per batch id."""

    def __init__(self, paths: StreamPaths) -> None:
        self.paths = paths

    def __call__(self, changed: DataFrame, batch_id: int) -> None:
        staged = self.paths.staging / "borough_windows" / f"{BATCH_ID}={batch_id}"
        changed.write.mode("overwrite").parquet(str(staged))
        # a replayed batch recomputes the same rows from the same state version: replacing is safe
        _publish(staged, self.paths.borough_windows / f"{BATCH_ID}={batch_id}")


def read_borough_windows(spark: SparkSession, path: Path | str) -> DataFrame:
    """The current value of every window: its row from the latest batch that changed it."""
    schema = StructType([*WINDOWS_SCHEMA.fields, StructField(BATCH_ID, LongType(), True)])
    rows = spark.read.schema(schema).parquet(str(path))
    latest = Window.partitionBy("window_start", "pickup_borough").orderBy(F.col(BATCH_ID).desc())
    return (
        rows.withColumn("_rank", F.row_number().over(latest))
        .filter(F.col("_rank") == 1)
        .drop("_rank", BATCH_ID)
        .orderBy("window_start", "pickup_borough")
    )


def read_stream_predictions(spark: SparkSession, path: Path | str) -> DataFrame:
    return spark.read.schema(PREDICTIONS_TABLE_SCHEMA).parquet(str(path))


class ProgressLog:
    """Prints each query's progress once per batch and appends it to `progress.jsonl`; then prints what the
    score query's new commit records say (`CommitLog`)."""

    def __init__(self, path: Path, say: Callable[[str], None], commits: CommitLog) -> None:
        self.path = path
        self.say = say
        self.commits = commits
        self._seen: dict[str, int] = {}

    def poll(self, queries: dict[str, StreamingQuery]) -> None:
        for name, query in queries.items():
            for progress in query.recentProgress:
                batch = int(progress.batchId)
                idle = "addBatch" not in (progress.durationMs or {})  # a trigger that found nothing to run
                if idle or batch <= self._seen.get(name, -1):
                    continue
                self._seen[name] = batch
                record = self._record(name, progress)
                _append_json_line(self.path, record)
                self.say(
                    f"[{name}] batch {batch}: {record['input_rows']:,} rows, "
                    f"in {record['input_rows_per_second']:,.0f}/s, "
                    f"processed {record['processed_rows_per_second']:,.0f}/s, "
                    f"{record['batch_duration_ms']:,} ms"
                    + (f", watermark {record['watermark']}" if record["watermark"] else "")
                )
        self.commits.poll()

    @staticmethod
    def _record(name: str, progress: Any) -> dict[str, Any]:
        event_time = progress.eventTime or {}
        state = progress.stateOperators[0].numRowsTotal if progress.stateOperators else None
        return {
            "query": name,
            "batch_id": int(progress.batchId),
            "timestamp": progress.timestamp,
            "input_rows": int(progress.numInputRows),
            "input_rows_per_second": float(progress.inputRowsPerSecond or 0.0),
            "processed_rows_per_second": float(progress.processedRowsPerSecond or 0.0),
            "batch_duration_ms": int(progress.batchDuration),
            "watermark": event_time.get("watermark"),
            "state_rows": state,
        }


class CommitLog:
    """Reads the score query's commit records as they appear (`commits/N.json`, written by `ScoreBatch` wherever
    it runs) and prints one line per batch, its skipped files and model changes."""

    def __init__(self, commits: Path, say: Callable[[str], None], model_uri: str) -> None:
        self.commits = commits
        self.say = say
        self.model_uri = model_uri
        self.records: list[BatchRecord] = []
        self._known = {path.name for path in commits.glob("*.json")}  # batches of earlier runs
        self._version: str | None = None

    def poll(self) -> None:
        for path in sorted(self.commits.glob("*.json"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
            if path.name in self._known or not path.stem.isdigit():
                continue
            self._known.add(path.name)
            record = BatchRecord(**json.loads(path.read_text(encoding="utf-8")))
            self.records.append(record)
            if record.recovered:
                self.say(f"batch {record.batch_id}: committed before the last stop, not written again")
                continue
            if record.model_version != self._version:
                was = f" (was v{self._version})" if self._version else ""
                self.say(f"model: {self.model_uri} -> v{record.model_version}{was}")
                self._version = record.model_version
            for entry in record.skipped_files:
                self.say(f"skipped: {entry['reason']}")
            self.say(
                f"batch {record.batch_id}: {record.files} file(s), {record.trips:,} trips scored by "
                f"v{record.model_version}, {record.quarantined:,} quarantined, {len(record.skipped_files)} file(s) "
                f"skipped ({record.committed_at - record.started_at:.1f} s)"
            )


@dataclass
class StreamSummary:
    batches: int
    trips: int
    quarantined: int
    skipped_files: int
    model_versions: list[str]
    landing: str
    predictions_path: str
    quarantine_path: str
    borough_windows_path: str
    progress_path: str
    stopped_by: str
    finished_at: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _StopFlag:
    """Set by SIGTERM/SIGINT in the main thread so the loop stops the queries cleanly."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def install(self) -> dict[int, Any]:
        """Install the handlers; returns the previous ones for `restore`."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        self.reason = signal.Signals(signum).name
        self.event.set()


def _wait(queries: dict[str, StreamingQuery], progress: ProgressLog, stop: _StopFlag, deadline: float | None) -> str:
    """Poll until every query ended, the deadline passed or a stop signal came; re-raise a query's failure."""
    while True:
        progress.poll(queries)
        for query in queries.values():
            failure = query.exception()
            if failure is not None:
                for other in queries.values():
                    other.stop()
                raise failure
        if not any(query.isActive for query in queries.values()):
            progress.poll(queries)  # the last batch may have finished after the poll above
            return "available_now"
        if stop.event.is_set():
            return stop.reason
        if deadline is not None and time.time() >= deadline:
            return "timeout"
        stop.event.wait(0.5)


def _check_archive_dir(landing: Path, archive: Path) -> None:
    """Spark keeps an archived file's full path under the archive folder; it refuses (with a stack trace, once
    the query runs) a folder where that path would fall in the landing folder again."""
    archived = archive.resolve() / landing.relative_to(landing.anchor)
    if archived.parts[: len(landing.parts)] == landing.parts:
        raise ConfigError(
            f"--archive-dir {archive}: archived files keep their full path under it ({archived}/...), which is "
            f"inside the landing folder {landing}; choose a folder outside it"
        )


def run_stream(
    spark: SparkSession,
    paths: StreamPaths,
    options: StreamOptions,
    quality: QualityParams,
    model_name: str,
    say: Callable[[str], None] = print,
) -> StreamSummary:
    """Run both queries until stopped (or, with `available_now`, until what has landed is processed)."""
    if options.clean_source == "archive":
        _check_archive_dir(paths.landing, options.archive_dir or paths.archive)
    paths.make()
    tracker = ChampionTracker(model_name, options.alias)
    # fail before starting if there is no champion; in-process (classic) the score function keeps this model
    if is_connect(spark):
        if tracker.current_version() is None:
            tracker.current(spark)  # raises the one-line ModelNotFoundError
    else:
        tracker.current(spark)
    scorer = ScoreBatch(paths, quality, tracker)
    score_writer = (
        landing_stream(
            spark,
            str(paths.landing),
            options.max_files_per_trigger,
            options.clean_source,
            str(options.archive_dir or paths.archive),
        )
        .writeStream.queryName(SCORE_QUERY)
        .foreachBatch(scorer)
        .option("checkpointLocation", str(paths.checkpoint(SCORE_QUERY)))
    )
    windows_writer = (
        spark.readStream.schema(PREDICTIONS_TABLE_SCHEMA)
        .parquet(str(paths.predictions))
        .transform(borough_window_counts(zones_frame(spark), options.watermark, options.window))
        .writeStream.queryName(WINDOWS_QUERY)
        .outputMode("update")
        .foreachBatch(WindowsBatch(paths))
        .option("checkpointLocation", str(paths.checkpoint(WINDOWS_QUERY)))
    )
    commits = CommitLog(paths.commits, say, f"models:/{model_name}@{options.alias}")
    progress = ProgressLog(paths.progress, say, commits)
    stop = _StopFlag()
    previous_handlers = stop.install()
    try:
        stopped_by = _run_queries(spark, score_writer, windows_writer, options, progress, stop)
    finally:
        stop.restore(previous_handlers)
        for query in spark.streams.active:
            if query.name in (SCORE_QUERY, WINDOWS_QUERY):
                query.stop()
    commits.poll()
    records = [r for r in commits.records if not r.recovered]

    return StreamSummary(
        batches=len(records),
        trips=sum(r.trips for r in records),
        quarantined=sum(r.quarantined for r in records),
        skipped_files=sum(len(r.skipped_files) for r in records),
        model_versions=sorted({r.model_version for r in records}),
        landing=str(paths.landing),
        predictions_path=str(paths.predictions),
        quarantine_path=str(paths.quarantine),
        borough_windows_path=str(paths.borough_windows),
        progress_path=str(paths.progress),
        stopped_by=stopped_by,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _run_queries(
    spark: SparkSession,
    score_writer: DataStreamWriter,
    windows_writer: DataStreamWriter,
    options: StreamOptions,
    progress: ProgressLog,
    stop: _StopFlag,
) -> str:
    deadline = time.time() + options.timeout_seconds if options.timeout_seconds else None
    if options.available_now:
        # the windows query runs after the score query so it sees every batch this run committed
        stopped_by = _wait({SCORE_QUERY: score_writer.trigger(availableNow=True).start()}, progress, stop, deadline)
        if stopped_by == "available_now":
            windows = {WINDOWS_QUERY: windows_writer.trigger(availableNow=True).start()}
            stopped_by = _wait(windows, progress, stop, deadline)
        return stopped_by
    queries = {
        SCORE_QUERY: score_writer.trigger(processingTime=f"{options.trigger_seconds} seconds").start(),
        WINDOWS_QUERY: windows_writer.trigger(processingTime=f"{options.windows_trigger_seconds} seconds").start(),
    }
    return _wait(queries, progress, stop, deadline)
