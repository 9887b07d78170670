"""The API's request log: rides and their predictions as append-only Parquet, written off the request path.

A request only appends one tuple to a bounded in-memory deque; a writer thread wakes every `flush_seconds` (or as
soon as `batch_rows` rows wait) and appends what waits to the open file, `batch_rows` rows per row group. The request
path wakes the writer for a full batch only, not for each ride: a wake-up per ride is a thread switch (and a turn of
the GIL) per request. Files are written under a hidden name (`.requests-*.parquet.part`: Spark, pyarrow and DuckDB
skip it) and renamed to `requests-*.parquet` when they reach `file_bytes` or `file_seconds`, or the server stops;
so a reader only ever sees whole files. When the complete files hold more than `max_bytes`, the oldest are deleted.
Nothing is kept when the log is off (no queue, no thread).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxi_duration.serve.parquet import require_pyarrow

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)


# One row per predicted ride, (name, type). Column names are the canonical trip's where they mean the same thing, so
# a Spark or DuckDB reader can score or monitor the logged rides as trips.
FIELDS: tuple[tuple[str, str], ...] = (
    ("logged_at", "timestamp_utc"),
    ("ride_id", "string"),
    ("pickup_datetime", "timestamp"),  # New York wall-clock, as in the trips table
    ("pickup_location_id", "int32"),
    ("dropoff_location_id", "int32"),
    ("trip_distance", "float64"),
    ("pickup_latitude", "float64"),
    ("pickup_longitude", "float64"),
    ("dropoff_latitude", "float64"),
    ("dropoff_longitude", "float64"),
    ("passenger_count", "int32"),
    ("service", "string"),
    ("regime", "string"),  # recorded_distance, zones_only or coordinates_only (regimes.py)
    ("duration_minutes", "float64"),
    ("model_name", "string"),
    ("model_version", "string"),
    ("shadow_model_version", "string"),
    ("shadow_duration_minutes", "float64"),
)
COLUMNS = tuple(name for name, _ in FIELDS)


def schema() -> pa.Schema:
    """The Parquet schema of `FIELDS`. pyarrow is imported only when a log is opened: the serving install runs
    without it, the log off."""
    import pyarrow as pa

    types = {
        "timestamp_utc": pa.timestamp("us", tz="UTC"),
        "timestamp": pa.timestamp("us"),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "string": pa.string(),
    }
    return pa.schema([(name, types[kind]) for name, kind in FIELDS])


PREFIX = "requests-"
PART = ".part"


class RequestLog:
    """Append rows (tuples in `COLUMNS` order) from any thread; a writer thread batches them into Parquet."""

    def __init__(
        self,
        folder: Path,
        file_bytes: int = 64 * 1024 * 1024,
        max_bytes: int = 1024 * 1024 * 1024,
        file_seconds: float = 60.0,
        batch_rows: int = 4096,
        flush_seconds: float = 1.0,
        queue_rows: int = 100_000,
    ) -> None:
        if file_bytes < 1 or max_bytes < file_bytes:
            raise ValueError("the request log needs 0 < file_bytes <= max_bytes")
        require_pyarrow(f"request log {folder}")
        self.schema = schema()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self.file_seconds = file_seconds
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.rows_written = 0
        self.queue_rows = queue_rows
        self.rows_dropped = 0  # only if the writer falls `queue_rows` behind (counted in /metrics)
        self.files_deleted = 0
        self.error: str | None = None
        self._rows: deque[tuple[Any, ...]] = deque()  # append and popleft are thread-safe
        self._wake = threading.Event()
        self._stopping = False
        self._writer: pq.ParquetWriter | None = None
        self._part: Path | None = None
        self._opened = 0.0
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ request path

    def append(self, row: tuple[Any, ...]) -> None:
        """Queue one row; never blocks (a full queue drops the row and counts it)."""
        rows = self._rows
        if len(rows) >= self.queue_rows:
            self.rows_dropped += 1
            return
        rows.append(row)
        if len(rows) == self.batch_rows:  # a full batch waits: no need to sleep out the rest of flush_seconds
            self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, close the open file (renamed to its final name) and stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        stopping = False
        while not stopping:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            stopping = self._stopping  # read before draining: rows queued before close() are all written
            while self._rows:
                rows = [self._rows.popleft() for _ in range(min(len(self._rows), self.batch_rows))]
                self._guarded(rows)
            if stopping or (self._writer is not None and time.monotonic() - self._opened >= self.file_seconds):
                self._guarded([], rotate=True)

    def _guarded(self, rows: list[tuple[Any, ...]], rotate: bool = False) -> None:
        """Write `rows` (or rotate); a failure is logged and counted, never raised: a full disk must not stop the
        API (the log says why, /metrics counts the rows lost)."""
        try:
            if rows:
                self._write(rows)
            if rotate:
                self._rotate()
        except Exception as exc:
            self.error = f"{exc.__class__.__name__}: {exc}"
            self.rows_dropped += len(rows)
            log.exception("request log: writing %d rows failed", len(rows))
            with contextlib.suppress(Exception):
                self._rotate()

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._sequence += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self._part = self.folder / f".{PREFIX}{stamp}-{self._sequence:06d}.parquet{PART}"
            self._writer = pq.ParquetWriter(self._part, self.schema, compression="zstd")
            self._opened = time.monotonic()
        columns = list(zip(*rows, strict=True))
        arrays = [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self._writer.write_table(table)
        self.rows_written += len(rows)
        assert self._part is not None
        if self._part.stat().st_size >= self.file_bytes:
            self._rotate()

    def _rotate(self) -> None:
        """Close the open file under its final name, then delete the oldest files beyond `max_bytes`."""
        if self._writer is None or self._part is None:
            return
        self._writer.close()
        self._part.rename(self._part.with_name(self._part.name.removeprefix(".").removesuffix(PART)))
        self._writer, self._part = None, None
        files = sorted(self.folder.glob(f"{PREFIX}*.parquet"))
        total = sum(f.stat().st_size for f in files)
        while files and total > self.max_bytes:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink()
            self.files_deleted += 1

    def files(self) -> list[Path]:
        """The complete files, oldest first."""
        return sorted(self.folder.glob(f"{PREFIX}*.parquet"))
