"""What the stream shows while it runs: each query's progress and each committed batch, printed and logged, and
the SIGTERM/SIGINT handlers that stop it cleanly."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql.streaming import StreamingQuery

from taxi_duration.stream.commit import BatchRecord, append_json_line


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
                append_json_line(self.path, record)
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


class StopFlag:
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
