"""Replay stored trips into a landing folder at a given rate, in event-time order, one atomic file at a time.

Values are written as they were stored (CSV strings stay byte-for-byte the same values; typed Parquet columns are
rendered as TLC CSV renders them), so the stream sees what a TLC export would contain. Each file is written under a
hidden name (`.name.tmp`, ignored by the stream) and renamed into place when complete.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from taxi_duration.errors import ConfigError, NoDataError, UnreadableInputError
from taxi_duration.ingest.formats import detect_format
from taxi_duration.ingest.readers import expand_sources
from taxi_duration.spark import SESSION_TIME_ZONE

TIMESTAMP_TEXT = "%Y-%m-%d %H:%M:%S"


@dataclass
class ReplayReport:
    rows: int
    files: int
    seconds: float
    rows_per_second: float
    max_behind_seconds: float  # how late the slowest file was against its schedule
    landing: str
    format: str
    skipped_input_lines: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _as_strings(table: pa.Table, utc_columns: frozenset[str] = frozenset()) -> pa.Table:
    """Every column as text, timestamps as New York wall-clock time in the TLC spelling, nulls kept null (an
    empty CSV field). Zoned timestamps and `utc_columns` (Spark's INT96, instants in UTC) are converted to New
    York time; other naive timestamps (TLC's own Parquet files) are wall-clock already."""
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(column.type):
            if column.type.tz is None and name in utc_columns:
                column = pc.assume_timezone(column, "UTC")
            zone = SESSION_TIME_ZONE if column.type.tz is not None else None
            seconds = column.cast(pa.timestamp("s", tz=zone), safe=False)
            columns.append(pc.strftime(seconds, format=TIMESTAMP_TEXT))
        else:
            columns.append(column.cast(pa.string()))
    return pa.table(columns, names=table.column_names)


def _int96_columns(path: str) -> frozenset[str]:
    """Columns stored as INT96 (Spark's default timestamp encoding: UTC instants that pyarrow reads as naive)."""
    files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    if not files:
        return frozenset()
    schema = pq.ParquetFile(files[0]).schema
    return frozenset(schema.column(i).name for i in range(len(schema)) if schema.column(i).physical_type == "INT96")


def _read_csv(path: str) -> tuple[pa.Table, int]:
    skipped = 0

    def skip(_row: object) -> str:
        nonlocal skipped
        skipped += 1
        return "skip"

    with open(path, encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader([handle.readline().lstrip("\ufeff")]), [])
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=True
        ),
    )
    return table, skipped


def load_trips(paths: list[str], limit: int | None = None) -> tuple[pa.Table, int]:
    """The stored trips as text columns, sorted by pickup time (unparseable times last); all inputs must share
    one set of columns."""
    tables: list[pa.Table] = []
    skipped = 0
    for source in expand_sources(paths):
        if source.kind == "parquet":
            table = pads.dataset(source.path, format="parquet").to_table()
            tables.append(_as_strings(table, _int96_columns(source.path)))
        else:
            table, bad = _read_csv(source.path)
            tables.append(table)
            skipped += bad
    names = tables[0].column_names
    for table in tables[1:]:
        if table.column_names != names:
            raise ConfigError(f"--from: inputs have different columns ({names} vs {table.column_names})")
    trips = pa.concat_tables(tables)
    if trips.num_rows == 0:
        raise NoDataError(f"{', '.join(paths)}: no trips to replay")
    fmt = detect_format(names, paths[0])
    pickup = fmt.source_column("pickup_datetime", names)
    if pickup is None:
        raise UnreadableInputError(f"{paths[0]}: no pickup time column to order the replay by")
    when = pd.to_datetime(trips.column(pickup).to_pandas(), errors="coerce", format="mixed")
    order = when.sort_values(kind="stable", na_position="last").index.to_numpy()
    trips = trips.take(pa.array(order))
    if limit is not None:
        trips = trips.slice(0, limit)
    return trips, skipped


def render_lines(trips: pa.Table, fmt: str) -> tuple[str | None, list[str]]:
    """(header line or None, one text line per trip) in the output format."""
    if fmt == "json":
        text = trips.to_pandas().to_json(orient="records", lines=True, force_ascii=False) or ""
        return None, [line for line in text.split("\n") if line]
    header = io.StringIO()
    csv.writer(header, lineterminator="").writerow(trips.column_names)  # pyarrow would quote every name
    buffer = io.BytesIO()
    try:  # unquoted, as TLC writes its CSVs; values with commas or quotes need quoting
        pacsv.write_csv(trips, buffer, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:
        buffer = io.BytesIO()
        pacsv.write_csv(trips, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    lines = buffer.getvalue().decode("utf-8").split("\n")
    return header.getvalue(), [line for line in lines if line]


def replay(
    trips: pa.Table,
    landing: Path,
    rate: float,
    files_per_second: float = 2.0,
    fmt: str = "csv",
    prefix: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    skipped_input_lines: int = 0,
) -> ReplayReport:
    """Write the trips into `landing` at `rate` trips/s in files of `rate / files_per_second` trips."""
    if rate <= 0 or files_per_second <= 0:
        raise ConfigError(f"--rate and --files-per-second must be positive, found {rate} and {files_per_second}")
    if fmt not in ("csv", "json"):
        raise ConfigError(f"--format: expected csv or json, found '{fmt}'")
    landing.mkdir(parents=True, exist_ok=True)
    header, lines = render_lines(trips, fmt)
    per_file = max(1, round(rate / files_per_second))
    interval = per_file / rate
    prefix = prefix or f"replay-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = ".jsonl" if fmt == "json" else ".csv"
    start = clock()
    behind = 0.0
    files = 0
    for index, first in enumerate(range(0, len(lines), per_file)):
        due = start + index * interval
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        behind = max(behind, clock() - due)
        chunk = lines[first : first + per_file]
        body = "\n".join(([header] if header is not None else []) + chunk) + "\n"
        final = landing / f"{prefix}-{index:06d}{suffix}"
        tmp = landing / f".{final.name}.tmp"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, final)
        files += 1
    seconds = max(clock() - start, 1e-9)
    return ReplayReport(
        rows=len(lines),
        files=files,
        seconds=seconds,
        rows_per_second=len(lines) / seconds,
        max_behind_seconds=behind,
        landing=str(landing),
        format=fmt,
        skipped_input_lines=skipped_input_lines,
    )
