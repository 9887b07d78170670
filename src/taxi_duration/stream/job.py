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

This module starts, watches and stops the two queries. The rest of `stream/` has one job a module: `sources.py`
(landing lines -> classified trips), `paths.py` (the folders and the predictions table), `commit.py` (staging,
rename, commit records), `scorer.py` (the score query's batch function and champion, picklable for Spark Connect),
`windows.py` (the borough x window counts) and `console.py` (progress lines and stop signals).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from taxi_duration.errors import ConfigError
from taxi_duration.params import QualityParams
from taxi_duration.registry.spark_model import is_connect
from taxi_duration.stream.console import CommitLog, ProgressLog, StopFlag
from taxi_duration.stream.paths import PREDICTIONS_TABLE_SCHEMA, StreamPaths, read_stream_predictions
from taxi_duration.stream.scorer import ChampionTracker, ScoreBatch
from taxi_duration.stream.sources import landing_stream
from taxi_duration.stream.windows import WindowsBatch, borough_window_counts, read_borough_windows
from taxi_duration.zones import zones_frame

# The table readers stay importable from here, where docs/streaming.md has always pointed.
__all__ = [
    "SCORE_QUERY",
    "WINDOWS_QUERY",
    "StreamOptions",
    "StreamSummary",
    "read_borough_windows",
    "read_stream_predictions",
    "run_stream",
]

SCORE_QUERY = "taxi_duration_score"
WINDOWS_QUERY = "taxi_duration_windows"


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


def _wait(queries: dict[str, StreamingQuery], progress: ProgressLog, stop: StopFlag, deadline: float | None) -> str:
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
    stop = StopFlag()
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
    stop: StopFlag,
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
