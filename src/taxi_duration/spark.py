"""The one Spark factory: embedded local, a cluster master URL, or a Spark Connect remote."""

from __future__ import annotations

import gc
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from taxi_duration import jvm
from taxi_duration.errors import ConfigError, spark_error_summary
from taxi_duration.settings import Settings

# TLC timestamps are New York wall-clock times without a zone; reading them in this zone makes
# durations across daylight-saving changes come out right and hour-of-day features local.
SESSION_TIME_ZONE = "America/New_York"
DEFAULT_MASTER = "local[*]"
# Whole-stage code generation compiles a stage into one Java method. The feature SQL (zone and travel-time tables
# as literals) with the model's assembler makes methods past 8,000 bytes of bytecode, which HotSpot never
# JIT-compiles (DontCompileHugeMethods): such a stage ran interpreted, 10x slower (monitor's scoring of 1M trips:
# 119 s against 11.8 s, benchmarks/codegen.py). At 8,000, the value Spark's configuration docs recommend on
# HotSpot, Spark runs those stages with per-operator code instead.
CODEGEN_HUGE_METHOD_LIMIT = "8000"


def use_session_time_zone_in_python() -> None:
    """Make Python's naive datetimes New York time too: `collect()` and `createDataFrame` convert through
    the driver process's local zone, not the session's, so the two must agree."""
    os.environ["TZ"] = SESSION_TIME_ZONE
    time.tzset()


def _log4j_config() -> str:
    return str(resources.files("taxi_duration").joinpath("conf", "log4j2.properties"))


def configure_driver_process(settings: Settings) -> None:
    """Process-wide settings a driver of this project needs. Entry points (the CLI, the benchmarks, the tests) call
    this once; library code never changes the process as a side effect of getting a session.

    - `TZ` = the session time zone: `collect()` and `createDataFrame` convert naive datetimes through the process's
      local zone, not the session's, so the two must agree (else hours shift by the machine's offset).
    - With a Spark Connect remote, the cyclic garbage collector off: pyspark's Connect ML objects delete their
      server-side copy from `__del__` with a blocking gRPC call. When the collector runs that finalizer inside
      grpc's Thread.start (which holds threading's _active_limbo_lock), the new thread can never start and the
      client hangs forever (seen here in `train`). Without automatic collection, finalizers run at reference drops
      only; models live until the session ends.
    """
    use_session_time_zone_in_python()
    if settings.remote:
        gc.disable()


def launched_by_spark_submit() -> bool:
    """True when spark-submit started this driver: its JVM is already up and carries spark-submit's
    `--master`, `--name`, `--driver-memory` and `--conf` as system properties."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_master(settings: Settings, submitted: bool) -> str | None:
    """The master to set on the builder: an explicit one always; none under spark-submit (its --master
    stands); else local[*]."""
    return settings.master or (None if submitted else DEFAULT_MASTER)


def get_spark(
    settings: Settings, app_name: str = "taxi-duration", *, archive_classes_to: Path | None = None
) -> SparkSession:
    """Build (or reuse) the session the settings describe. Only entry points call this, after
    `configure_driver_process`. With `archive_classes_to`, a new JVM that writes the classes it loads to that file
    when it exits (`taxi-duration class-archive`; `stop_jvm` waits for it)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # executors on a cluster run this interpreter (with pandas/pyarrow), not whatever `python3` is on PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf: dict[str, str] = {
        "spark.sql.session.timeZone": SESSION_TIME_ZONE,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # partitioned writes keep a writer per partition open instead of sorting every task's rows first
        "spark.sql.maxConcurrentOutputFileWriters": "32",
        "spark.sql.parquet.compression.codec": "snappy",
        # the feature SQL embeds zone tables as literals; plan strings are long, not a problem
        "spark.sql.debug.maxToStringFields": "500",
        "spark.sql.codegen.hugeMethodLimit": CODEGEN_HUGE_METHOD_LIMIT,
    }
    if archive_classes_to is not None and (
        settings.remote or SparkSession.getActiveSession() is not None or launched_by_spark_submit()
    ):
        raise ConfigError(
            "class archive: needs a driver JVM this process starts (found --remote, spark-submit or a running session)"
        )
    if settings.remote:
        return remote_session(settings.remote, {**conf, **settings.spark_conf})

    active = SparkSession.getActiveSession()
    if active is not None:  # e.g. `demo` runs several commands in one process: one session for all
        _checkpoint_dir(active, settings)
        _codegen_limit(active, settings)
        return active
    builder = SparkSession.builder
    submitted = launched_by_spark_submit()
    master = session_master(settings, submitted)
    if master is not None:
        builder = builder.master(master)
    if not submitted:
        builder = builder.appName(app_name)
    static_conf = {
        "spark.driver.host": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "spark.driver.bindAddress": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": str((settings.workspace / "spark-warehouse").resolve()),
        "spark.cleaner.referenceTracking.cleanCheckpoints": "true",
    }
    given_conf = dict(settings.spark_conf)
    if not submitted:  # JVM options: spark-submit has started the JVM already (use --driver-memory there)
        static_conf["spark.driver.memory"] = settings.driver_memory
        given_conf[DRIVER_JAVA_OPTIONS] = driver_java_options(settings, archive_classes_to)
    for key, value in {**static_conf, **conf, **given_conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    _checkpoint_dir(spark, settings)
    return spark


DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def driver_java_options(settings: Settings, archive_classes_to: Path | None = None) -> str:
    """The options of a driver JVM this process launches: the workspace's Derby home and the log configuration, the
    collector and the class archive (`taxi_duration.jvm`), then the settings' own `spark.driver.extraJavaOptions`
    (added to these, not replacing them; of two options that disagree, Java takes the later)."""
    given = _given_java_options(settings)
    ours = [
        f"-Dderby.system.home={settings.workspace.resolve()}",
        f"-Dlog4j2.configurationFile={_log4j_config()}",
        *jvm.collector_options(given),
    ]
    if archive_classes_to is not None:
        ours += jvm.write_archive_options(archive_classes_to)
    elif settings.class_archive and (archive := class_archive(settings)) is not None:
        ours += jvm.use_archive_options(archive)
    return jvm.join([*ours, *given])


def _given_java_options(settings: Settings) -> list[str]:
    return shlex.split(settings.spark_conf.get(DRIVER_JAVA_OPTIONS, ""))


def class_archive(settings: Settings) -> Path | None:
    """The class archive a driver JVM launched with these settings would use (or `class-archive` would build):
    named by a key of the Java build, Spark's jars and the JVM options. None without a `java` to key it by."""
    given = _given_java_options(settings)
    options = [*jvm.environment_options(), *jvm.collector_options(given), *given]
    key = jvm.archive_key(_spark_jars(), options)
    return None if key is None else jvm.archive_path(settings.class_archive_dir or jvm.default_folder(), key)


def _spark_jars() -> Path:
    from pyspark.find_spark_home import _find_spark_home  # what pyspark's spark-submit runs from

    return Path(_find_spark_home()) / "jars"


def stop_jvm(spark: SparkSession, timeout_s: float = 300.0) -> int:
    """Stop the session and the driver JVM this process launched, and wait for the JVM to exit (it writes a class
    archive as it exits); its exit code. The next `get_spark` in this process launches a new JVM."""
    from pyspark import SparkContext

    gateway = getattr(SparkContext, "_gateway", None)
    process = getattr(gateway, "proc", None)
    spark.stop()
    if gateway is None or process is None:
        raise ConfigError("no JVM of this process to stop: the session was not launched here")
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    process.stdin.close()  # the JVM exits when its stdin closes (PythonGatewayServer)
    return int(process.wait(timeout=timeout_s))


def _codegen_limit(spark: SparkSession, settings: Settings) -> None:
    """A session this factory did not build (a Databricks cluster's) still gets the setting scoring's speed depends
    on (CODEGEN_HUGE_METHOD_LIMIT); a value in the settings' spark_conf wins. A platform that refuses the setting
    keeps its own: slower, not wrong."""
    key = "spark.sql.codegen.hugeMethodLimit"
    try:
        spark.conf.set(key, settings.spark_conf.get(key, CODEGEN_HUGE_METHOD_LIMIT))
    except Exception:  # e.g. a restricted cluster's allow-list
        return


# Skip the pre-shuffle partial aggregation: for a grouping whose keys are almost all distinct (trip ids), it only
# builds a hash map as large as its input before shuffling the same rows. Spark 4.3; wrong for few keys.
BYPASS_PARTIAL_AGGREGATION = {"spark.sql.execution.bypassPartialAggregation": "true"}


# Keep a hash map for up to this many groups per task in aggregations of object buffers (percentile_approx)
# instead of falling back to sorting the task's rows after 128 groups, Spark's default: the zone-pair medians
# (at most 263 x 263 groups) took 8-12 s sorted against 4-4.5 s hashed on the 10M benchmark trips.
OBJECT_AGGREGATION_IN_HASH_MAP = {"spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "100000"}


def stable_file_splits(spark: SparkSession) -> dict[str, str]:
    """The setting that keeps a file split the same way in every job of a block: Spark sizes file splits by the
    session's default parallelism, read again by each job, which an autoscaling cluster changes between jobs.
    Pinned to today's value (no change in the splits), so row numbers from one job match another's. Empty under
    Spark Connect (the client cannot read the server's parallelism) or where the setting is given already."""
    key = "spark.sql.files.minPartitionNum"
    if type(spark).__module__.startswith("pyspark.sql.connect") or spark.conf.get(key, None):
        return {}
    return {key: str(spark.sparkContext.defaultParallelism)}


def keep_empty_branches(spark: SparkSession) -> dict[str, str]:
    """The setting that keeps an empty branch of a union in the plan that runs: Spark's adaptive planner otherwise
    replaces a branch whose result turned out empty by nothing, and a count observed below it (`observe`) is lost
    although its rows were read. Appended to the rules the session excludes already."""
    key, rule = (
        "spark.sql.adaptive.optimizer.excludedRules",
        "org.apache.spark.sql.execution.adaptive.AQEPropagateEmptyRelation",
    )
    excluded = [r for r in (spark.conf.get(key, None) or "").split(",") if r.strip()]
    if rule not in excluded:
        excluded.append(rule)
    return {key: ",".join(excluded)}


@contextmanager
def sql_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """SQL settings for the queries planned and run inside the block, restored after it. A platform that refuses a
    setting (a restricted cluster's allow-list, an older Spark) keeps its own: slower, not wrong."""
    before: dict[str, str | None] = {}
    for key, value in conf.items():
        try:
            before[key] = spark.conf.get(key, None)
            spark.conf.set(key, value)
        except Exception:  # any refusal leaves the session as it was
            continue
    try:
        yield
    finally:
        for key, previous in before.items():
            if previous is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, previous)


def _checkpoint_dir(spark: SparkSession, settings: Settings) -> None:
    """Give a classic session without one a checkpoint directory under the workspace. MLlib's iterative learners
    cut their lineage every `checkpointInterval` iterations only with one: without it, GBT's per-tree predictions
    grow a lineage that overflows the JVM stack at about 150 trees (docs/model_quality.md). Files are removed as
    the learner moves on (cleanCheckpoints). A session that has one (a Databricks cluster's) keeps it."""
    try:
        context = spark.sparkContext
    except Exception:  # a Spark Connect session (Databricks shared or serverless too): the server decides
        return
    if context.getCheckpointDir() is None:
        root = (settings.workspace / "tmp" / "spark-checkpoints").resolve()
        remove_empty_folders(root)
        context.setCheckpointDir(str(root))


def remove_empty_folders(root: Path) -> int:
    """Remove the empty folders directly under `root`; how many. Each session's checkpoint directory is a new
    folder under the workspace's (Spark names it by a UUID), empty unless a learner checkpointed and Spark has not
    cleaned it yet: without this, every command would leave one behind. A folder with files is kept, and one
    removed under a running session does no harm (Spark creates the path again before it writes a checkpoint)."""
    removed = 0
    if not root.is_dir():
        return removed
    for folder in root.iterdir():
        try:
            if folder.is_dir():
                folder.rmdir()  # only an empty folder: OSError otherwise
                removed += 1
        except OSError:
            continue
    return removed


def redact(url: str) -> str:
    """A Spark Connect URL without its token, for messages and logs."""
    return re.sub(r"(token=)[^;]*", r"\1***", url)


def remote_session(url: str, conf: dict[str, str], timeout: float = 10.0) -> SparkSession:
    """A Spark Connect session with `conf` set; a one-line ConfigError if the server is not there or refuses us
    (the client would otherwise retry for minutes and end in a gRPC trace)."""
    parsed = urlparse(url.split(";", 1)[0].rstrip("/"))
    if parsed.scheme != "sc" or not parsed.hostname:
        raise ConfigError(f"--remote: expected a Spark Connect URL like sc://127.0.0.1:15002, found '{redact(url)}'")
    host, port = parsed.hostname, parsed.port or 15002
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"--remote {redact(url)}: no Spark Connect server answers at {host}:{port} ({exc.strerror or exc}); "
            "start one with `taxi-duration connect-server start`"
        ) from None
    try:
        spark = SparkSession.builder.remote(url).getOrCreate()
        for key, value in conf.items():
            spark.conf.set(key, value)
    except Exception as exc:
        hint = "; a server started by `connect-server start` needs the URL in WORKSPACE/connect/remote-url"
        detail = spark_error_summary(exc)
        raise ConfigError(f"--remote {redact(url)}: {detail}" + (hint if "UNAUTHENTICATED" in detail else "")) from None
    return spark
