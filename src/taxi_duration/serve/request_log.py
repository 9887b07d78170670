"""The API's request log: rides and their predictions as append-only Parquet, written off the request path.

A request only appends its row to two growing buffers, column by column in effect: its numbers (timestamps as
microseconds since the epoch: `micros`; None as NaN) to one `array('d')`, its strings to one list. No object is kept
per row: tuples kept until sent are objects every garbage collection walks, which cost the p99 more than anything
else here (docs/benchmarks.md). A thread of the server wakes every `flush_seconds` (or as soon as `batch_rows` rows
wait), takes the buffers and sends them, `marshal`-encoded (the numbers as one bytes object: a memcpy), to the log's
own writer process (request_log_files.py), which holds them and, once a file (every minute, or at `file_bytes`),
turns them into Arrow columns with NumPy, no Python object per value, writes Parquet and keeps the folder under
`max_bytes`. The server never converts rows to Arrow: that holds the GIL for milliseconds, which a thread of the
server would take from the event loop. The request path wakes the sender for a full batch only, not for each ride:
a wake-up per ride is a thread switch per request. Nothing is kept when the log is off (no buffer, no thread, no
process).

The writer's CPU, about 3.8 ms per 4,096 rows all its work included (`benchmarks/request_log.py`, 2026-12-06), is
the log's cost to the p99 on a machine whose cores are all busy (two cores under a load generator): spent once a
file rather than once a second, it touches the requests of one moment a minute instead of some of every second's
(docs/benchmarks.md).

The writer process ends when its input does: when the server closes the log, and also when the server is killed
(what it holds then goes to a complete file under its final name: every row the server had sent).
"""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import math
import os
import struct
import subprocess
import sys
import threading
from array import array
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxi_duration.serve.parquet import require_pyarrow

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


# One row per predicted ride, (name, type). Column names are the canonical trip's where they mean the same thing, so
# a Spark or DuckDB reader can score or monitor the logged rides as trips.
FIELDS: tuple[tuple[str, str], ...] = (
    ("logged_at", "timestamp_utc"),  # microseconds since the epoch in rows (`micros`), like pickup_datetime
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
# Where each column travels: numbers (timestamps, int32 and float64: all exact as float64, microseconds up to the
# year 2255) in one array of doubles, strings in one list; row after row in both.
NUMBERS = tuple(i for i, (_, kind) in enumerate(FIELDS) if kind != "string")
STRINGS = tuple(i for i, (_, kind) in enumerate(FIELDS) if kind == "string")
_numbers_of, _strings_of = itemgetter(*NUMBERS), itemgetter(*STRINGS)
_STRING_TYPES = frozenset({str, type(None)})


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
FILE_BYTES = 64 * 1024 * 1024  # a file is made at this many bytes of rows held, and closed at this size on disk
PART = ".part"
# before each marshal-encoded batch sent to the writer process: its length and its number of rows (which the writer
# counts as it holds the batch, without decoding it)
FRAME = struct.Struct("<QQ")
# The writer process keeps to one thread of work: NumPy's BLAS starts no thread pool, and Arrow allocates with the
# C library's malloc, not jemalloc, whose background thread purges memory on its own schedule (and, on another
# core, interrupts what runs there: each purge of a process's pages is an interrupt to every core it ran on).
WRITER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "ARROW_DEFAULT_MEMORY_POOL": "system"}
_NAN = math.nan  # a missing number; the API refuses NaN (allow_inf_nan=False) and logs a non-finite shadow as None
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch: of an instant (aware) or of a wall-clock time (naive), exactly."""
    return (moment - (_EPOCH if moment.tzinfo is None else _EPOCH_UTC)) // _MICROSECOND


class RequestLog:
    """Append rows (tuples in `COLUMNS` order) from any thread; the log's writer process writes them to Parquet.

    `rows_written`, `files_deleted` and `error` are the writer process's counts as of its last report (one per
    `flush_seconds`; final after `close`). `rows_dropped` counts rows lost: full buffers (`queue_rows` waiting: the
    writer has fallen behind), a writer process that ended, or a write that failed (a full disk)."""

    def __init__(
        self,
        folder: Path,
        file_bytes: int = FILE_BYTES,
        max_bytes: int = 1024 * 1024 * 1024,
        file_seconds: float = 60.0,
        batch_rows: int = 4096,
        flush_seconds: float = 1.0,
        queue_rows: int = 100_000,
    ) -> None:
        if file_bytes < 1 or max_bytes < file_bytes:
            raise ValueError("the request log needs 0 < file_bytes <= max_bytes")
        require_pyarrow(f"request log {folder}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.queue_rows = queue_rows
        self.rows_written = 0
        self.files_deleted = 0
        self.error: str | None = None
        self._dropped_here = 0  # not sent: the list was full, or the writer process had ended
        self._dropped_there = 0  # sent, not written (the writer process's count)
        self._sent = 0
        self._unwritten = 0  # sent, but the writer process ended before it wrote or counted them (killed)
        self._numbers = array("d")  # len(NUMBERS) values a row
        self._strings: list[str | None] = []  # len(STRINGS) values a row
        self._waiting = 0  # rows in the buffers
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        config = {
            "folder": str(self.folder),
            "file_bytes": file_bytes,
            "max_bytes": max_bytes,
            "file_seconds": file_seconds,
            "batch_rows": batch_rows,
        }
        # its own session: a Ctrl-C or a signal to the server's process group does not cut a file short; the
        # process ends when its input does (the server closed the log, or died)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "taxi_duration.serve.request_log_files", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, **WRITER_ENVIRONMENT},
        )
        self._sender = threading.Thread(target=self._send_loop, name="request-log", daemon=True)
        self._reader = threading.Thread(target=self._read_counts, name="request-log-counts", daemon=True)
        self._sender.start()
        self._reader.start()

    @property
    def rows_dropped(self) -> int:
        return self._dropped_here + self._dropped_there + self._unwritten

    # ------------------------------------------------------------------------------------------ request path

    def append(self, row: tuple[Any, ...]) -> None:
        """Queue one row; never blocks, never raises (a full buffer or a row of the wrong types is dropped and
        counted)."""
        if self._waiting >= self.queue_rows:
            self._dropped_here += 1
            return
        try:
            numbers = array("d", [_NAN if value is None else value for value in _numbers_of(row)])
            strings = _strings_of(row)
            if len(row) != len(FIELDS) or not _STRING_TYPES.issuperset(map(type, strings)):
                raise TypeError(f"expected {len(FIELDS)} values, strings in {[COLUMNS[i] for i in STRINGS]}")
        except (TypeError, IndexError) as exc:  # a datetime, not `micros`, or a value of the wrong type: a bug
            self._dropped_here += 1
            self.error = f"a row could not be encoded: {exc}"
            return
        with self._lock:
            self._numbers.extend(numbers)  # array to array: one copy, nothing half-appended
            self._strings.extend(strings)
            self._waiting += 1
            waiting = self._waiting
        if waiting == self.batch_rows:  # a full batch waits: no need to sleep out the rest of flush_seconds
            self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Send what waits, let the writer process close its file (renamed to its final name) and end."""
        self._stopping = True
        self._wake.set()
        self._sender.join(timeout)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self.error = f"the request log's writer process did not end within {timeout:g} s; killed"
            log.error("request log: %s", self.error)
        self._reader.join(timeout)

    def files(self) -> list[Path]:
        """The complete files, oldest first."""
        return sorted(self.folder.glob(f"{PREFIX}*.parquet"))

    # ------------------------------------------------------------------------------------------ sender thread

    def _send_loop(self) -> None:
        stopping = False
        while not stopping:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            stopping = self._stopping  # read before taking the list: rows queued before close() are all sent
            with self._lock:
                rows, numbers, strings = self._waiting, self._numbers, self._strings
                self._waiting, self._numbers, self._strings = 0, array("d"), []
            self._send(rows, numbers, strings)  # no rows too: the writer closes files by age on it
        stdin = self._process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()

    def _send(self, rows: int, numbers: array[float], strings: list[str | None]) -> None:
        stdin = self._process.stdin
        try:
            payload = marshal.dumps((rows, numbers.tobytes(), strings))
            assert stdin is not None
            stdin.write(FRAME.pack(len(payload), rows))
            stdin.write(payload)  # the GIL is released while the pipe is full
            stdin.flush()
            self._sent += rows
        except (OSError, ValueError) as exc:  # the writer process has ended (a broken pipe) or the pipe is closed
            self._dropped_here += rows
            ended = self._process.poll()
            self._failed(
                f"its writer process ended ({ended})" if ended is not None else f"{exc.__class__.__name__}: {exc}"
            )

    def _failed(self, why: str) -> None:
        if self.error != why:  # said once, counted always
            log.error("request log: rows are not written: %s", why)
            self.error = why

    def _read_counts(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        for line in stdout:
            counts = json.loads(line)
            self.rows_written = int(counts["rows_written"])
            self.files_deleted = int(counts["files_deleted"])
            self._dropped_there = int(counts["rows_dropped"])
            if counts["error"] is not None and counts["error"] != self.error:
                self.error = str(counts["error"])
        # the writer process has ended: what it was sent and neither wrote nor counted is lost (0 when it ended well)
        ended = self._process.wait()
        self._unwritten = max(0, self._sent - self.rows_written - self._dropped_there)
        if ended != 0:
            self._failed(f"its writer process ended ({ended})")
