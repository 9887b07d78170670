"""The workspace tables (trips, quarantine) and the quality report, committed together; reading only what is
committed.

Layout of a local lakehouse (`WORKSPACE/lakehouse`):

    trips/service=S/year=Y/month=M/source=ID/part-*.parquet     data files (Hive-style partitions)
    quarantine/source=ID/part-*.parquet
    _commits/00000000000000000007.json                            one file per commit (see below)
    _staging/<txn>/                                               an ingest's output before its commit
    _lock                                                         held (flock) by the one ingest writing

A commit file names every live data file of both tables (paths relative to the lakehouse, so a moved or copied
workspace keeps working), the sources they came from and that ingest's quality report. Committing is creating
the next numbered file: written under a temporary name, then hard-linked into place, which is atomic and fails if
another writer took the number first. Readers take the highest number and read exactly the files it names, so a
reader sees one commit or the next, never a half-written ingest. Files no commit names (an interrupted ingest's
output, the old files of a re-ingested source) are invisible and are removed by the next ingest (`recover`).

A lakehouse written before commits existed has table folders and no `_commits/`: it is read as one commit of every
data file it holds, and the first ingest writes that commit down before changing anything.

Remote tables (s3://, hdfs://, dbfs:/) have no commit log here: they are read and written as plain folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from taxi_duration.errors import NoDataError, TaxiDurationError
from taxi_duration.faults import crash_point
from taxi_duration.schema import QUARANTINE_SCHEMA, TRIPS_TABLE_SCHEMA

COMMITS = "_commits"
STAGING = "_staging"
LOCK = "_lock"
KEEP_COMMITS = 10  # older commit files are pruned; the newest alone is enough to read
_COMMIT_NAME = re.compile(r"^(\d{20})\.json$")
_SOURCE_PART = re.compile(r"(?:^|/)source=([^/]+)/")


class ConcurrentIngestError(TaxiDurationError):
    """Another ingest holds this lakehouse (or committed while this one ran)."""


@dataclass
class Snapshot:
    """One commit: the live files of each table (relative to the lakehouse) and what produced them."""

    version: int
    tables: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    quality_report: dict[str, Any] | None = None
    committed_at: str = ""

    def files(self, table: str) -> list[str]:
        return self.tables.get(table, [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "committed_at": self.committed_at,
            "tables": self.tables,
            "sources": self.sources,
            "quality_report": self.quality_report,
        }


def is_local(path: Path | str) -> bool:
    text = str(path)
    return "://" not in text or text.startswith("file:")


def local_path(path: Path | str) -> Path:
    return Path(str(path).removeprefix("file://").removeprefix("file:"))


def source_of(relative: str) -> str | None:
    """The source id in a data file's path (`.../source=ID/part-...`)."""
    match = _SOURCE_PART.search(relative)
    return match.group(1) if match else None


def _data_files(root: Path, table: str) -> list[str]:
    """Parquet files under a table folder, as Spark would list them (hidden and `_` names skipped)."""
    folder = root / table
    if not folder.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        found.extend(
            (Path(dirpath) / name).relative_to(root).as_posix()
            for name in sorted(filenames)
            if name.endswith(".parquet") and not name.startswith((".", "_"))
        )
    return found


def _commit_versions(root: Path) -> list[int]:
    folder = root / COMMITS
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for name in os.listdir(folder) if (m := _COMMIT_NAME.match(name)))


def latest_snapshot(root: Path | str, tables: Iterable[str] = ("trips", "quarantine")) -> Snapshot | None:
    """The committed state of a local lakehouse: the newest commit, or (written before commits existed) every data
    file in the table folders; None if nothing was ever written."""
    root = local_path(root)
    versions = _commit_versions(root)
    if versions:
        data = json.loads((root / COMMITS / f"{versions[-1]:020d}.json").read_text(encoding="utf-8"))
        return Snapshot(
            version=int(data["version"]),
            tables={name: list(files) for name, files in data["tables"].items()},
            sources=data.get("sources", {}),
            quality_report=data.get("quality_report"),
            committed_at=data.get("committed_at", ""),
        )
    listed = {table: _data_files(root, table) for table in tables}
    if not any((root / table).is_dir() for table in tables):
        return None
    sources: dict[str, dict[str, Any]] = {s: {} for files in listed.values() for f in files if (s := source_of(f))}
    return Snapshot(version=0, tables=listed, sources=sources)


def _read(spark: SparkSession, path: Path | str, table: str, schema: StructType) -> DataFrame:
    """The committed rows of one table; a clear error if nothing has been ingested yet."""
    text = str(path)
    what = "trips table" if table == "trips" else f"{table} table"
    if not is_local(path):
        return _read_spark(spark, schema, text, [text], what)
    folder = local_path(path)
    root = folder.parent
    snapshot = latest_snapshot(root, (folder.name,))
    if snapshot is None or not snapshot.sources:
        raise NoDataError(f"{text}: no {what} yet; run `taxi-duration ingest PATH...` first")
    files = [str(root / name) for name in snapshot.files(folder.name)]
    if not files:  # committed, but every row went to the other table
        return spark.createDataFrame([], schema)
    return _read_spark(spark, schema, str(folder), files, what)


def _read_spark(spark: SparkSession, schema: StructType, base: str, files: list[str], what: str) -> DataFrame:
    try:
        # basePath: partition columns come from the folder names below the table, as when reading the folder
        return spark.read.schema(schema).option("basePath", base).parquet(*files)
    except AnalysisException as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise NoDataError(f"{base}: cannot read the {what} ({first})") from None


def read_trips(spark: SparkSession, path: Path | str) -> DataFrame:
    """The committed clean trips (the one way every stage reads them)."""
    return _read(spark, path, "trips", TRIPS_TABLE_SCHEMA)


def read_quarantine(spark: SparkSession, path: Path | str) -> DataFrame:
    """The committed quarantined rows."""
    return _read(spark, path, "quarantine", QUARANTINE_SCHEMA)


def committed_quality_report(root: Path | str) -> dict[str, Any] | None:
    """The quality report of the ingest that made the current commit (None before the first commit)."""
    snapshot = latest_snapshot(root)
    return None if snapshot is None else snapshot.quality_report


# ----------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """One writer per lakehouse: an advisory lock the kernel drops when the process dies (even by kill -9)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"{root}: another ingest is writing to this lakehouse; try again after it"
            raise ConcurrentIngestError(message) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write `text` to `path` so a reader finds the old file or the whole new one (fsynced, then renamed or linked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        if exclusive:
            os.link(tmp, path)  # fails if the name exists: two writers can never both commit version N
        else:
            os.replace(tmp, path)
    except FileExistsError:
        raise ConcurrentIngestError(f"{path}: another ingest committed first; run the ingest again") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_empty_dirs(folder: Path) -> None:
    if not folder.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            if Path(dirpath) != folder:
                os.rmdir(dirpath)  # only succeeds when empty


def recover(root: Path, tables: Iterable[str] = ("trips", "quarantine")) -> dict[str, int]:
    """Make the folders match the current commit (call holding the writer lock, before writing anything).

    An interrupted ingest leaves staging folders and, after its files were moved in, data files no commit names;
    a finished one may not have removed the files of the sources it replaced. All of those are deleted. A
    lakehouse from before commits gets its first commit: every file it holds, so nothing it had is lost."""
    root.mkdir(parents=True, exist_ok=True)
    tables = tuple(tables)
    snapshot = latest_snapshot(root, tables)
    if snapshot is None or snapshot.version == 0:
        # from now on readers follow commits, even before this ingest's first one (its moved files stay unseen)
        snapshot = snapshot or Snapshot(version=0, tables={table: [] for table in tables})
        snapshot.version = commit(root, snapshot, expected_version=0)
    live = {name for table in tables for name in (snapshot.files(table) if snapshot else [])}
    removed = {"staging": 0, "uncommitted_files": 0}
    staging = root / STAGING
    if staging.is_dir():
        removed["staging"] = len(os.listdir(staging))
        shutil.rmtree(staging)
    for table in tables:
        for name in _data_files(root, table):
            if name not in live:
                (root / name).unlink()
                removed["uncommitted_files"] += 1
        folder = root / table
        if folder.is_dir():  # Spark's own staging from a writer killed mid-write (older versions wrote in place)
            for hidden in [p for p in folder.iterdir() if p.name.startswith((".spark-staging", "_temporary"))]:
                shutil.rmtree(hidden, ignore_errors=True)
        _remove_empty_dirs(folder)
    return removed


def new_staging(root: Path) -> Path:
    """A fresh staging folder for one ingest's output."""
    path = root / STAGING / uuid.uuid4().hex
    path.mkdir(parents=True)
    return path


def move_staged(root: Path, staging: Path, table: str) -> list[str]:
    """Move a table's staged data files into the table folder (same file names: Spark puts its job id in them).
    Still invisible afterwards: no commit names them yet."""
    moved = []
    for name in _data_files(staging, table):
        relative = name  # "<table>/service=.../part-....parquet" under the staging folder
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / relative, target)
        moved.append(relative)
    return moved


def commit(root: Path, snapshot: Snapshot, expected_version: int) -> int:
    """Make `snapshot` the current state: create commit `expected_version + 1`. Returns the new version."""
    version = expected_version + 1
    snapshot.version = version
    snapshot.committed_at = datetime.now(UTC).isoformat(timespec="seconds")
    _write_atomically(
        root / COMMITS / f"{version:020d}.json", json.dumps(snapshot.to_dict(), indent=1) + "\n", exclusive=True
    )
    for old in _commit_versions(root)[:-KEEP_COMMITS]:
        (root / COMMITS / f"{old:020d}.json").unlink(missing_ok=True)
    return version


def replace_sources(
    previous: Snapshot | None,
    new_files: dict[str, list[str]],
    new_sources: dict[str, dict[str, Any]],
    quality_report: dict[str, Any],
) -> tuple[Snapshot, list[str]]:
    """The next snapshot: the previous one without the files of the sources being (re-)ingested, plus the new
    files. Returns it and the replaced files (deleted once the commit is made)."""
    replaced_ids = set(new_sources)
    tables: dict[str, list[str]] = {}
    replaced: list[str] = []
    names = set(previous.tables if previous else ()) | set(new_files)
    for table in sorted(names):
        kept: list[str] = []
        for name in previous.files(table) if previous else []:
            (replaced if source_of(name) in replaced_ids else kept).append(name)
        tables[table] = sorted(kept + new_files.get(table, []))
    sources = {k: v for k, v in (previous.sources if previous else {}).items() if k not in replaced_ids}
    sources.update(new_sources)
    snapshot = Snapshot(version=previous.version if previous else 0, tables=tables, sources=sources)
    snapshot.quality_report = quality_report
    return snapshot, replaced


def publish(
    root: Path,
    staging: Path,
    new_sources: dict[str, dict[str, Any]],
    quality_report: dict[str, Any],
    tables: Iterable[str] = ("trips", "quarantine"),
) -> int:
    """Move an ingest's staged tables in and commit them with its report; then remove what was replaced."""
    previous = latest_snapshot(root, tables)
    expected = previous.version if previous else 0
    new_files = {table: move_staged(root, staging, table) for table in tables}
    crash_point("ingest:moved")
    snapshot, replaced = replace_sources(previous, new_files, new_sources, quality_report)
    version = commit(root, snapshot, expected)
    crash_point("ingest:committed")
    for name in replaced:
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        (root / STAGING).rmdir()  # when no other staging is left
    for table in tables:
        _remove_empty_dirs(root / table)
    return version
