"""The driver JVM's options: the collector, the class archive (built by a real JVM, then mapped by another)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from taxi_duration import jvm
from taxi_duration.settings import Settings
from taxi_duration.spark import class_archive, driver_java_options

QUIET = ["-Xlog:cds=off", "-Xlog:cds+dynamic=off"]


@pytest.fixture
def no_environment_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own SPARK_SUBMIT_OPTS (C1 only, SerialGC) would count as the user's choice of a collector."""
    for name in jvm.ENVIRONMENT_OPTIONS:
        monkeypatch.delenv(name, raising=False)


def _archive(folder: Path, size: int, recorded: int | None) -> Path:
    archive = folder / "spark-classes-k.jsa"
    archive.write_bytes(b"x" * size)
    if recorded is not None:
        archive.with_suffix(".json").write_text(json.dumps({"bytes": recorded}), encoding="utf-8")
    return archive


def test_parallel_gc_unless_a_collector_is_chosen(no_environment_options: None, monkeypatch: pytest.MonkeyPatch):
    assert jvm.collector_options([]) == ["-XX:+UseParallelGC"]
    assert jvm.collector_options(["-Xss4m"]) == ["-XX:+UseParallelGC"]
    assert jvm.collector_options(["-XX:+UseG1GC"]) == []
    assert jvm.collector_options(["-XX:+UseZGC"]) == []
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    assert jvm.collector_options([]) == []


def test_an_archive_is_used_only_whole_and_stamped(tmp_path: Path):
    for name in "abc":
        (tmp_path / name).mkdir()
    unstamped = _archive(tmp_path / "a", 10, None)
    truncated = _archive(tmp_path / "b", 10, 11)  # the stamp's size, not the file's: a cut copy would crash Java
    whole = _archive(tmp_path / "c", 10, 10)
    assert jvm.use_archive_options(unstamped) == []
    assert jvm.use_archive_options(truncated) == []
    assert jvm.use_archive_options(tmp_path / "missing.jsa") == []
    assert jvm.use_archive_options(whole) == [f"-XX:SharedArchiveFile={whole}", *QUIET]
    (tmp_path / "c" / "spark-classes-k.json").write_text("not json", encoding="utf-8")
    assert jvm.use_archive_options(whole) == []


def test_install_moves_the_build_in_then_stamps_it(tmp_path: Path):
    archive = _archive(tmp_path, 4, 4)  # an older build, stamped
    scratch = jvm.scratch_path(archive)
    assert scratch.parent == archive.parent and scratch.name.startswith(".") and str(os.getpid()) in scratch.name
    scratch.write_bytes(b"y" * 7)
    assert jvm.install(scratch, archive) == 7
    assert not scratch.exists() and archive.read_bytes() == b"y" * 7
    assert json.loads(archive.with_suffix(".json").read_text(encoding="utf-8"))["bytes"] == 7
    assert jvm.usable(archive)
    scratch.write_bytes(b"")
    with pytest.raises(OSError, match="empty class archive"):
        jvm.install(scratch, archive)
    assert jvm.usable(archive)  # the good one stays


def test_the_key_follows_java_jars_and_class_shaping_options(tmp_path: Path):
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "spark-core.jar").write_bytes(b"a")
    key = jvm.archive_key(jars, ["-XX:+UseParallelGC"])
    assert key is not None and len(key) == 16
    assert jvm.archive_key(jars, ["-XX:+UseParallelGC"]) == key
    assert jvm.archive_key(jars, ["-XX:+UseParallelGC", "-Dderby.system.home=/w", "-Xlog:gc:file=g.log"]) == key
    assert jvm.archive_key(jars, ["-XX:+UseSerialGC"]) != key
    (jars / "spark-core.jar").write_bytes(b"ab")  # another Spark build
    assert jvm.archive_key(jars, ["-XX:+UseParallelGC"]) != key
    assert jvm.archive_key(tmp_path / "no-jars", []) is None


def test_driver_options_keep_ours_and_add_the_users(no_environment_options: None, tmp_path: Path):
    settings = Settings(workspace=tmp_path / "a b", class_archive_dir=tmp_path / "cache")
    options = shlex.split(driver_java_options(settings))
    assert options[0] == f"-Dderby.system.home={tmp_path / 'a b'}"  # quoted: Spark splits the value like a shell
    assert options[1].startswith("-Dlog4j2.configurationFile=") and options[1].endswith("log4j2.properties")
    assert options[2:] == ["-XX:+UseParallelGC"]  # no archive built yet

    users = settings.model_copy(update={"spark_conf": {"spark.driver.extraJavaOptions": "-XX:+UseG1GC -Xss8m"}})
    assert shlex.split(driver_java_options(users))[2:] == ["-XX:+UseG1GC", "-Xss8m"]

    archive = class_archive(settings)
    assert archive is not None and archive.parent == tmp_path / "cache"
    archive.parent.mkdir()
    archive.write_bytes(b"abc")
    archive.with_suffix(".json").write_text(json.dumps({"bytes": 3}), encoding="utf-8")
    assert shlex.split(driver_java_options(settings))[2:] == [
        "-XX:+UseParallelGC",
        f"-XX:SharedArchiveFile={archive}",
        *QUIET,
    ]
    assert class_archive(users) != archive  # another collector: another archive
    off = settings.model_copy(update={"class_archive": False})
    assert shlex.split(driver_java_options(off))[2:] == ["-XX:+UseParallelGC"]
    scratch = tmp_path / "scratch.jsa"
    assert shlex.split(driver_java_options(settings, archive_classes_to=scratch))[2:] == [
        "-XX:+UseParallelGC",
        f"-XX:ArchiveClassesAtExit={scratch}",
        *QUIET,
    ]


def test_class_archive_refuses_spark_connect(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    from taxi_duration import cli

    argv = ["taxi-duration", "--workspace", str(tmp_path), "--remote", "sc://127.0.0.1:15002", "class-archive"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    message = "error: class-archive: the archive is for a driver JVM this machine starts; drop --remote"
    assert capsys.readouterr().err.strip() == message
    assert not tmp_path.joinpath("lakehouse").exists()


SESSION = """
import json, sys
from taxi_duration.settings import Settings
from taxi_duration.spark import configure_driver_process, get_spark
settings = Settings(workspace=sys.argv[1])
configure_driver_process(settings)
spark = get_spark(settings)
beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
print(json.dumps({"collectors": sorted(bean.getName() for bean in beans), "rows": spark.range(5).count()}))
"""


@pytest.mark.slow
def test_class_archive_is_built_once_and_mapped_by_later_sessions(tmp_path: Path):
    """`taxi-duration class-archive` runs a real JVM that writes the archive as it exits; a later session maps its
    Spark classes from it (Java's class-load log says where each class came from) and runs under ParallelGC."""
    cache = tmp_path / "cache"
    env = {
        **{k: v for k, v in os.environ.items() if k not in jvm.ENVIRONMENT_OPTIONS},
        "TAXI_DURATION_CLASS_ARCHIVE_DIR": str(cache),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    cli = [sys.executable, "-m", "taxi_duration.cli", "--workspace", str(tmp_path / "ws"), "class-archive", "--json"]
    built = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    result = json.loads(built.stdout.strip().splitlines()[-1])
    archive = Path(result["path"])
    assert archive.parent == cache and archive.stat().st_size == result["bytes"] > 10_000_000
    assert jvm.usable(archive) and not list(cache.glob(".*.tmp"))
    assert not (tmp_path / "ws").exists()  # the workload ran in a scratch workspace
    built_at = archive.stat().st_mtime_ns

    again = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1]) == result
    assert "is up to date" in " ".join(again.stderr.split())  # the console wraps long paths
    assert archive.stat().st_mtime_ns == built_at

    log = tmp_path / "class-load.log"
    logged = {
        **env,
        "TAXI_DURATION_SPARK_CONF": json.dumps({"spark.driver.extraJavaOptions": f"-Xlog:class+load:file={log}"}),
    }
    run = subprocess.run(
        [sys.executable, "-c", SESSION, str(tmp_path / "ws2")], env=logged, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"collectors": ["PS MarkSweep", "PS Scavenge"], "rows": 5}
    loaded = {
        line.split()[1]: line.split("source: ", 1)[1]
        for line in log.read_text(encoding="utf-8").splitlines()
        if "source: " in line
    }
    assert loaded["org.apache.spark.SparkContext"] == "shared objects file (top)"
    from_archive = sum(source == "shared objects file (top)" for source in loaded.values())
    assert from_archive > 5000, f"{from_archive} classes mapped from the archive"
