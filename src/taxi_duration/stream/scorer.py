"""The score query's `foreachBatch` function and the champion it scores with: the code that runs per micro-batch.

Through Spark Connect both are pickled and run in a Python worker of the server, so they carry what they need
(paths, quality bounds, the MLflow wiring) and report only through files (`commit.py`), never driver memory."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.dataset as pads
from mlflow.tracking import MlflowClient
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from taxi_duration.errors import ModelNotFoundError
from taxi_duration.params import QualityParams
from taxi_duration.quality.rules import REASON, to_quarantine
from taxi_duration.registry.promotion import alias_version
from taxi_duration.registry.spark_model import is_connect, load_spark_model
from taxi_duration.schema import QUARANTINE_SCHEMA, TRIP_COLUMNS
from taxi_duration.score.batch import with_predictions
from taxi_duration.stream.commit import BatchRecord, append_json_line, publish, write_json_atomically, written_counts
from taxi_duration.stream.paths import BATCH_ID, PREDICTIONS_SCHEMA, StreamPaths
from taxi_duration.stream.sources import LANDED_AT, BatchClassifier, batch_files, landing_times, plan_files


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
        trips, by_reason = written_counts(final, quarantine)
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
        write_json_atomically(self.paths.commits / f"{batch_id}.json", asdict(record))

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
            append_json_line(self.paths.skipped_files, {"batch_id": batch_id, **asdict(entry)})
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
        trips, by_reason = written_counts(staged_predictions, staged_quarantine)
        phase("count")
        # quarantine first: the predictions folder appearing is what marks the batch as committed
        publish(staged_quarantine, self.paths.quarantine / f"{BATCH_ID}={batch_id}")
        publish(staged_predictions, self.paths.predictions / f"{BATCH_ID}={batch_id}")
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
        write_json_atomically(self.paths.commits / f"{batch_id}.json", asdict(record))
