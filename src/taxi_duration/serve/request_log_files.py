"""The request log's writer process: rows in, append-only Parquet files out, rotated by size and age, bounded on disk.

`RequestLog` (request_log.py) starts this module as a child process of the server (`python -m
taxi_duration.serve.request_log_files CONFIG`) and sends it frames on its stdin: an 8-byte length, then a
`marshal`-encoded list of `marshal`-encoded row tuples (timestamps as microseconds since the epoch: plain ints, so
`marshal` carries them; no pickle). An empty list is a heartbeat, sent every `flush_seconds`, so a quiet server
still closes files by age. After each frame the process prints one JSON line of counts on its stdout
(`rows_written`, `rows_dropped`, `files_deleted`, `error`); end of input closes the open file under its final name
and ends the process.

Why a process and not a thread of the server: converting a batch to Arrow holds the GIL for milliseconds, which a
thread would take from the event loop. The process runs at the lowest CPU priority (nice 19): its work is about
7 ms of CPU per 4,096 rows, and on a busy machine answers come first.

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

import pyarrow as pa
import pyarrow.parquet as pq

from taxi_duration.serve.request_log import FRAME, PART, PREFIX, schema

log = logging.getLogger("taxi_duration.serve.request_log")


class LogFiles:
    """The folder of Parquet files: `write(rows)` appends row groups of at most `batch_rows` rows."""

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

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Append `rows`; a failure is logged and counted, never raised: a full disk must not stop the log's
        process (the server's /metrics counts the rows lost, its log says why)."""
        for start in range(0, len(rows), self.batch_rows):
            chunk = rows[start : start + self.batch_rows]
            try:
                self._append(chunk)
            except Exception as exc:
                self.error = f"{exc.__class__.__name__}: {exc}"
                self.rows_dropped += len(chunk)
                log.exception("request log: writing %d rows failed", len(chunk))
                with contextlib.suppress(Exception):
                    self.rotate()

    def tick(self) -> None:
        """Close the open file once it is `file_seconds` old."""
        if self._writer is not None and time.monotonic() - self._opened >= self.file_seconds:
            self.rotate()

    def _append(self, rows: list[tuple[Any, ...]]) -> None:
        if self._writer is None:
            self._sequence += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            self._part = self.folder / f".{PREFIX}{stamp}-{self._sequence:06d}.parquet{PART}"
            self._writer = pq.ParquetWriter(self._part, self.schema, compression="zstd")
            self._opened = time.monotonic()
        columns = list(zip(*rows, strict=True))
        arrays = [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows_written += len(rows)
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


def frames(stream: IO[bytes]) -> Iterator[list[tuple[Any, ...]]]:
    """The row lists sent on `stream`, until it ends."""
    while True:
        header = stream.read(FRAME.size)
        if len(header) < FRAME.size:
            return
        (size,) = FRAME.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return
        yield [marshal.loads(row) for row in marshal.loads(payload)]


def run(config: dict[str, Any], stream: IO[bytes], out: IO[str]) -> None:
    files = LogFiles(
        Path(config["folder"]),
        int(config["file_bytes"]),
        int(config["max_bytes"]),
        float(config["file_seconds"]),
        int(config["batch_rows"]),
    )
    try:
        for rows in frames(stream):
            if rows:
                files.write(rows)
            files.tick()
            out.write(json.dumps(files.counts()) + "\n")
            out.flush()
    finally:
        with contextlib.suppress(Exception):
            files.rotate()
        out.write(json.dumps(files.counts()) + "\n")
        out.flush()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(OSError):
        os.nice(19)
    run(json.loads(sys.argv[1]), sys.stdin.buffer, sys.stdout)


if __name__ == "__main__":
    main()
