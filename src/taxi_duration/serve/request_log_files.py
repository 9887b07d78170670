"""The request log's writer process: rows in, append-only Parquet files out, rotated by size and age, bounded on disk.

`RequestLog` (request_log.py) starts this module as a child process of the server (`python -m
taxi_duration.serve.request_log_files CONFIG`) and sends it frames on its stdin: a header (the frame's length and its
number of rows), then a `marshal`-encoded tuple (rows, numbers, strings): the rows' numbers as the bytes of an array
of doubles (timestamps as microseconds since the epoch, None as NaN) and their strings as a list, row after row (no
pickle). A frame of no rows is a heartbeat, sent every `flush_seconds`, so a quiet server still closes files by
age. After each frame the process prints one JSON line of counts on its stdout (`rows_written`, `rows_dropped`,
`files_deleted`, `error`); end of input makes the file of what it holds and ends the process.

Why a process and not a thread of the server: converting rows to Arrow holds the GIL for milliseconds, which a
thread would take from the event loop. The process runs at the lowest priority, all its threads and its
scheduling group (`lower_priority`), with one thread of work (`WRITER_ENVIRONMENT` in request_log.py), so on a busy
machine answers come first.

It holds the frames as they come and converts them when a file is made (`LogFiles.rotate`): at `file_bytes` of
frames held, `file_seconds` after the first, or at the end of input. Converting each frame as it came, once a
second, was measured to cost the server's p99 at concurrency 1 about 10-20% on two busy cores, where reading and
dropping the same frames cost nothing measurable (docs/benchmarks.md): the conversion, a few milliseconds of CPU
each second, touched the requests of every second; made once a file, the same CPU touches those of one moment a
minute (the p99 for the p99.9). The conversion makes Arrow columns with NumPy (no Python object per value) and
keeps Parquet's dictionary encoding and statistics to the columns where they pay (the few distinct strings; the two
timestamps readers filter on), which cuts the write by about 40% and the file by about a fifth.

Files are written under a hidden name (`.requests-*.parquet.part`: Spark, pyarrow and DuckDB skip it) and renamed
to `requests-*.parquet` when complete (a file is closed at `file_bytes` on disk); so a reader only ever sees whole
files. When the complete files hold more than `max_bytes`, the oldest go. A writer process killed loses what it
holds, as it lost its open file before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from taxi_duration.serve.request_log import FIELDS, FRAME, NUMBERS, PART, PREFIX, STRINGS, schema

log = logging.getLogger("taxi_duration.serve.request_log")

# Parquet's dictionary encoding where strings repeat (on ride ids and numbers it only costs time and bytes) and
# min/max statistics where readers filter (by time)
DICTIONARY = ["service", "regime", "model_name", "model_version", "shadow_model_version"]
STATISTICS = ["logged_at", "pickup_datetime"]
# the doubles a whole-number column of this bit width takes exactly: int32s, and int64 microseconds (the largest
# double below 2**63)
WHOLE_RANGE = {32: (-(2.0**31), 2.0**31 - 1), 64: (-(2.0**63), 2.0**63 - 1024)}


class LogFiles:
    """The folder of Parquet files. `hold(rows, frame)` keeps a frame as it came; `rotate()` (at `file_bytes` of
    frames held, at `file_seconds` after the first, at the end of input) turns the held frames into Parquet files
    of row groups of at most `batch_rows` rows, each written under a hidden name, closed at `file_bytes` on disk (or
    with the last frame) and renamed when complete.

    Held rows count as written, as rows in an open file did before (a writer process killed loses both)."""

    def __init__(self, folder: Path, file_bytes: int, max_bytes: int, file_seconds: float, batch_rows: int) -> None:
        self.schema = schema()
        self.folder = Path(folder)
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self.file_seconds = file_seconds
        self.batch_rows = batch_rows
        self.rows_written = 0
        self.rows_dropped = 0
        self.files_deleted = 0
        self.error: str | None = None
        self._held: list[tuple[int, bytes]] = []
        self._held_bytes = 0
        self._opened = 0.0
        self._sequence = 0
        self._writer: pq.ParquetWriter | None = None
        self._part: Path | None = None

    def counts(self) -> dict[str, Any]:
        return {
            "rows_written": self.rows_written,
            "rows_dropped": self.rows_dropped,
            "files_deleted": self.files_deleted,
            "error": self.error,
        }

    def hold(self, rows: int, frame: bytes) -> None:
        """Keep one frame of `rows` rows for the next file; a file is made once `file_bytes` of frames wait."""
        if not self._held:
            self._opened = time.monotonic()
        self._held.append((rows, frame))
        self._held_bytes += len(frame)
        self.rows_written += rows
        if self._held_bytes >= self.file_bytes:
            self.rotate()

    def tick(self) -> None:
        """Make the file once the first held frame is `file_seconds` old."""
        if self._held and time.monotonic() - self._opened >= self.file_seconds:
            self.rotate()

    def rotate(self) -> None:
        """The held frames to complete files (a file is closed at `file_bytes`); then the oldest files beyond
        `max_bytes` go."""
        held, self._held, self._held_bytes = self._held, [], 0
        for sent, frame in held:
            try:
                rows, numbers, strings = marshal.loads(frame)
                kept, unfit = table(rows, numbers, strings, self.schema)
            except Exception as exc:  # a frame the server should not have sent: its rows only are lost
                self._lost(sent, f"a frame could not be decoded: {exc.__class__.__name__}: {exc}")
                continue
            if unfit is not None:  # a bug in what the server logs: said, counted, the other rows written
                self._lost(sent - kept.num_rows, unfit)
            for start in range(0, kept.num_rows, self.batch_rows):
                self._append(kept.slice(start, self.batch_rows))
        self._close()

    def _append(self, rows: pa.Table) -> None:
        """One row group into the open file (opened if none is); a failure (a full disk) is logged and counted,
        never raised: it must not stop the log's process (the server's /metrics counts the rows lost, its log
        says why)."""
        try:
            if self._writer is None:
                self._sequence += 1
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                self._part = self.folder / f".{PREFIX}{stamp}-{self._sequence:06d}.parquet{PART}"
                self._writer = pq.ParquetWriter(
                    self._part, self.schema, compression="zstd", use_dictionary=DICTIONARY, write_statistics=STATISTICS
                )
            self._writer.write_table(rows)
            assert self._part is not None
            if self._part.stat().st_size >= self.file_bytes:
                self._close()
        except Exception as exc:
            self._lost(rows.num_rows, f"{exc.__class__.__name__}: {exc}")
            with contextlib.suppress(Exception):
                self._close()

    def _lost(self, rows: int, why: str) -> None:
        self.rows_written -= rows
        self.rows_dropped += rows
        self.error = why
        log.error("request log: %s (%d rows lost)", why, rows)

    def _close(self) -> None:
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


def frames(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """The frames sent on `stream` until it ends: each one's row count (read without decoding the rest) and its
    bytes, as sent."""
    while True:
        header = stream.read(FRAME.size)
        if len(header) < FRAME.size:
            return
        size, rows = FRAME.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return
        yield rows, payload


def table(rows: int, numbers: bytes, strings: list[str | None], table_schema: pa.Schema) -> tuple[pa.Table, str | None]:
    """The rows of one frame as a table of `table_schema`: numbers by column with NumPy (NaN is null), strings by
    column from every len(STRINGS)-th of the list. A row whose value for a whole-number column (a timestamp's
    microseconds, an int32) is fractional or out of the type's range is left out, never wrapped or truncated; the
    second value says which columns and how many rows (None when every row fits)."""
    matrix = np.frombuffer(numbers, dtype="<f8").reshape(rows, len(NUMBERS))
    arrays: list[pa.Array | None] = [None] * len(FIELDS)
    unfit = np.zeros(rows, dtype=bool)
    unfit_by_column: dict[str, int] = {}
    for j, i in enumerate(NUMBERS):
        column, kind = matrix[:, j], table_schema.field(i).type
        missing = np.isnan(column)
        mask = missing if missing.any() else None
        if pa.types.is_floating(kind):
            arrays[i] = pa.array(column, mask=mask, type=kind)
        else:  # whole numbers: timestamps in microseconds and int32s, exact as doubles
            low, high = WHOLE_RANGE[kind.bit_width]
            wrong = ~missing & ((column != np.trunc(column)) | (column < low) | (column > high))
            if wrong.any():
                unfit |= wrong
                unfit_by_column[table_schema.field(i).name] = int(wrong.sum())
                missing = missing | wrong
            whole = np.where(missing, 0.0, column).astype(np.int64)
            arrays[i] = pa.array(whole if pa.types.is_timestamp(kind) else whole.astype(np.int32), mask=mask, type=kind)
    for j, i in enumerate(STRINGS):
        arrays[i] = pa.array(strings[j :: len(STRINGS)], type=pa.string())
    result = pa.Table.from_arrays(arrays, schema=table_schema)
    if not unfit_by_column:
        return result, None
    kept = result.filter(pa.array(~unfit))
    columns = ", ".join(f"{name} ({count})" for name, count in unfit_by_column.items())
    return kept, f"{rows - kept.num_rows} rows not written: not a whole number in the column's range: {columns}"


def run(config: dict[str, Any], stream: IO[bytes], out: IO[str]) -> None:
    files = LogFiles(
        Path(config["folder"]),
        int(config["file_bytes"]),
        int(config["max_bytes"]),
        float(config["file_seconds"]),
        int(config["batch_rows"]),
    )
    try:
        for rows, frame in frames(stream):
            if rows:
                files.hold(rows, frame)
            files.tick()
            out.write(json.dumps(files.counts()) + "\n")
            out.flush()
    finally:
        with contextlib.suppress(Exception):
            files.rotate()
        out.write(json.dumps(files.counts()) + "\n")
        out.flush()


def lower_priority() -> list[str]:
    """Nice 19 for every thread of this process, and for its scheduling group; what was done, named.

    Every thread: libraries start theirs when imported (pyarrow's allocator has one), before `main` runs, and on
    Linux a nice value is a thread's own. The group: the process runs in a session of its own (so a Ctrl-C to the
    server does not cut a file short), and where the kernel groups processes by session (autogroup, the default on
    most distributions) CPU is shared between groups first; a nice value inside a group of one changes nothing,
    the group's own does. Not SCHED_IDLE: measured worse (docs/benchmarks.md), as the scheduler then counts the
    writer's core as idle and moves the server onto it."""
    done = []
    with contextlib.suppress(OSError):
        for thread in sorted(os.listdir("/proc/self/task")):
            with contextlib.suppress(ProcessLookupError):  # a thread that has ended since
                os.setpriority(os.PRIO_PROCESS, int(thread), 19)
        done.append("threads nice 19")
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w", encoding="ascii") as group:
        group.write("19")
        done.append("autogroup nice 19")
    return done


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    lower_priority()
    # pyarrow imports pandas the first time it makes an array of NumPy's: now, at start, not in the first file
    table(0, b"", [], schema())
    run(json.loads(sys.argv[1]), sys.stdin.buffer, sys.stdout)


if __name__ == "__main__":
    main()
