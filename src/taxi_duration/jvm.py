"""JVM options for the Spark drivers this project starts itself: a throughput garbage collector, and a class archive.

Both apply only where `taxi_duration.spark.get_spark` launches the JVM (embedded `local[*]`, or a cluster's driver
started here); a JVM that spark-submit, a Connect server or a cluster manager started keeps its own options.

- **The collector.** Spark's batch work on a driver of a few GB runs faster under the throughput collector
  (ParallelGC) than under the JVM's default G1: ingest of 10M trips 49 s against 52 s, alternating, on the
  benchmark machine (docs/benchmarks.md). A collector the user chose (the settings' `spark.driver.extraJavaOptions`,
  `SPARK_SUBMIT_OPTS`, `JAVA_TOOL_OPTIONS`) wins.
- **The class archive** (AppCDS, JEP 350): the Spark, Scala and Hadoop classes a run loads, stored by the JVM in the
  form it maps at start, instead of being read from some 250 jars and verified on every start. A session and its
  first queries start 2-4 s sooner. `taxi-duration class-archive` builds it once per machine (an archive is valid
  for one Java build, one set of Spark jars and one set of JVM options, so it is named by a key of the three);
  sessions use it when it is there and whole. It lives in the user's cache folder, not in a workspace: one archive
  serves every workspace. Java refuses an archive that does not match it; a truncated one would crash it, so an
  archive is used only next to the stamp its build wrote last, which records its size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path

PARALLEL_GC = "-XX:+UseParallelGC"
_COLLECTOR = re.compile(r"-XX:\+Use\w*GC$")
# Java's own messages about an archive it cannot use (another build, another class path): it then starts without
# the archive, slower and correct, and says so on stderr, which is a command's output here.
_QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off")
ENVIRONMENT_OPTIONS = ("SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")


def environment_options() -> list[str]:
    """JVM options every JVM that spark-submit starts gets from the environment."""
    return [option for name in ENVIRONMENT_OPTIONS for option in shlex.split(os.environ.get(name, ""))]


def collector_options(given: list[str]) -> list[str]:
    """ParallelGC, unless a collector is chosen in `given` (the user's driver options) or the environment."""
    if any(_COLLECTOR.match(option) for option in [*given, *environment_options()]):
        return []
    return [PARALLEL_GC]


def default_folder() -> Path:
    """Where archives live unless the settings say: the user's cache folder (XDG), like pip's cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "taxi-duration" / "jvm"


def java_binary() -> Path | None:
    """The `java` spark-submit runs: JAVA_HOME's, else the first on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else (Path(which) if (which := shutil.which("java")) else None)
    return found.resolve() if found is not None and found.exists() else None


def archive_key(spark_jars: Path, options: list[str]) -> str | None:
    """What an archive is valid for, as a short hash: the Java build, Spark's jars, and the JVM options that shape
    the class data (system properties, `-D`, and logging, `-Xlog`, do not). None without a `java` to run."""
    java = java_binary()
    if java is None or not spark_jars.is_dir():
        return None
    digest = hashlib.sha256()
    release = java.parent.parent / "release"  # a JDK's version and build
    stat = java.stat()
    digest.update(f"{java}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    if release.is_file():
        digest.update(release.read_bytes())
    for jar in sorted(spark_jars.glob("*.jar")):
        jar_stat = jar.stat()
        digest.update(f"{jar.name}:{jar_stat.st_size}:{jar_stat.st_mtime_ns}\n".encode())
    digest.update(" ".join(option for option in options if not option.startswith(("-D", "-Xlog"))).encode())
    return digest.hexdigest()[:16]


def archive_path(folder: Path, key: str) -> Path:
    return folder / f"spark-classes-{key}.jsa"


def _stamp_path(archive: Path) -> Path:
    return archive.with_suffix(".json")


def usable(archive: Path) -> bool:
    """An archive its build finished: present, with the stamp written after it, of the size the stamp records."""
    try:
        recorded = json.loads(_stamp_path(archive).read_text(encoding="utf-8"))["bytes"]
        return bool(recorded == archive.stat().st_size and recorded > 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def use_archive_options(archive: Path) -> list[str]:
    """The options that map `archive` at start, quietly: none if it is not usable."""
    if not usable(archive):
        return []
    return [f"-XX:SharedArchiveFile={archive}", *_QUIET]


def write_archive_options(scratch: Path) -> list[str]:
    """The options that make the JVM write the classes it loaded to `scratch` when it exits."""
    return [f"-XX:ArchiveClassesAtExit={scratch}", *_QUIET]


def scratch_path(archive: Path) -> Path:
    """Where one build writes, moved onto `archive` only when complete: builds at once never share a file."""
    return archive.with_name(f".{archive.name}.{os.getpid()}.tmp")


def install(scratch: Path, archive: Path) -> int:
    """Move a finished build's archive in place, then write its stamp; its size in bytes. Any older stamp is
    removed first, so no reader pairs a new archive with an old stamp."""
    size = scratch.stat().st_size
    if size == 0:
        raise OSError(f"{scratch}: the JVM wrote an empty class archive")
    _stamp_path(archive).unlink(missing_ok=True)
    os.replace(scratch, archive)
    stamp = _stamp_path(archive)
    partial = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps({"bytes": size, "java": str(java_binary())}) + "\n", encoding="utf-8")
    os.replace(partial, stamp)
    return size


def join(options: list[str]) -> str:
    """Options as one `extraJavaOptions` value (Spark splits it as a shell would)."""
    return " ".join(shlex.quote(option) for option in options)
