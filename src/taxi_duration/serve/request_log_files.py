"""The request log's writer process: rows in, append-only Parquet files out, rotated by size and age, bounded on disk.

`RequestLog` (request_log.py) starts this module as a child process of the server (`python -m
taxi_duration.serve.request_log_files CONFIG`) and sends it frames on its stdin: an 8-byte length, then a
`marshal`-encoded tuple (rows, numbers, strings): the rows' numbers as the bytes of an array of doubles (timestamps
as microseconds since the epoch, None as NaN) and their strings as a list, row after row (no pickle). A frame of no
rows is a heartbeat, sent every `flush_seconds`, so a quiet server still closes files by age. After each frame the
process prints one JSON line of counts on its stdout (`rows_written`, `rows_dropped`, `files_deleted`, `error`); end
of input closes the open file under its final name and ends the process.

Why a process and not a thread of the server: converting a batch to Arrow holds the GIL for milliseconds, which a
thread would take from the event loop. The process runs at the lowest priority, all its threads and its
scheduling group (`lower_priority`), with one thread of work (`WRITER_ENVIRONMENT` in request_log.py), so on a busy
machine answers come first. Its work is about 4.7 ms of CPU per 4,096 rows (`benchmarks/request_log.py`): the
columns come out of the frame with NumPy (no Python object per value), and Parquet's dictionary encoding and
statistics are kept to the columns where they pay (the few distinct strings; the two timestamps readers filter on),
which cuts the write by about 40% and the file by about a fifth.

Files are written under a hidden name (`.requests-*.parquet.part`: Spark, pyarrow and DuckDB skip it) and renamed
to `requests-*.parquet` when they reach `file_bytes` or `file_seconds`, or the input ends; so a reader only ever
sees whole files. When the complete files hold more than `max_bytes`, the oldest go.
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
    """The folder of Parquet files: `write(table)` appends row groups of at most `batch_rows` rows."""

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
        self._writer: pq.ParquetWriter | None = None
        self._part: Path | None = None
        self._opened = 0.0
        self._sequence = 0

    def counts(self) -> dict[str, Any]:
        return {
            "rows_written": self.rows_written,
            "rows_dropped": self.rows_dropped,
            "files_deleted": self.files_deleted,
            "error": self.error,
        }

    def write(self, table: pa.Table) -> None:
        """Append `table`'s rows; a failure is logged and counted, never raised: a full disk must not stop the log's
        process (the server's /metrics counts the rows lost, its log says why)."""
        for start in range(0, table.num_rows, self.batch_rows):
            chunk = table.slice(start, self.batch_rows)
            try:
                self._append(chunk)
            except Exception as exc:
                self.error = f"{exc.__class__.__name__}: {exc}"
                self.rows_dropped += chunk.num_rows
                log.exception("request log: writing %d rows failed", chunk.num_rows)
                with contextlib.suppress(Exception):
                    self.rotate()

    def tick(self) -> None:
        """Close the open file once it is `file_seconds` old."""
        if self._writer is not None and time.monotonic() - self._opened >= self.file_seconds:
            self.rotate()

    def _append(self, rows: pa.Table) -> None:
        if self._writer is None:
            self._sequence += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self._part = self.folder / f".{PREFIX}{stamp}-{self._sequence:06d}.parquet{PART}"
            self._writer = pq.ParquetWriter(
                self._part,
                self.schema,
                compression="zstd",
                use_dictionary=DICTIONARY,
                write_statistics=STATISTICS,
            )
            self._opened = time.monotonic()
        self._writer.write_table(rows)
        self.rows_written += rows.num_rows
        assert self._part is not None
        if self._part.stat().st_size >= self.file_bytes:
            self.rotate()

    def rotate(self) -> None:
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


def frames(stream: IO[bytes], table_schema: pa.Schema) -> Iterator[tuple[int, pa.Table, str | None]]:
    """The batches of rows sent on `stream` until it ends: the rows sent, the table of those that fit the schema,
    and why the others do not (None when all do)."""
    while True:
        header = stream.read(FRAME.size)
        if len(header) < FRAME.size:
            return
        (size,) = FRAME.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return
        rows, numbers, strings = marshal.loads(payload)
        yield (rows, *table(rows, numbers, strings, table_schema))


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
        for sent, rows, unfit in frames(stream, files.schema):
            if unfit is not None:  # a bug in what the server logs: said, counted, the other rows written
                files.rows_dropped += sent - rows.num_rows
                files.error = unfit
                log.error("request log: %s", unfit)
            if rows.num_rows:
                files.write(rows)
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
    run(json.loads(sys.argv[1]), sys.stdin.buffer, sys.stdout)


if __name__ == "__main__":
    main()
