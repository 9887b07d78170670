"""Daemons as plain processes: start one detached (its own session, output to a log), wait for its ready line,
tell a live Spark daemon from a zombie or a recycled pid, stop a group (SIGTERM, then SIGKILL), and the small
file and port helpers both the standalone cluster and the Connect server use."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from taxi_duration.errors import TaxiDurationError

FAILURE = re.compile(r"(Exception|ERROR)[^\n]*")


class ClusterError(TaxiDurationError):
    """The standalone cluster could not be started, reached or stopped."""


def spark_home() -> Path:
    """SPARK_HOME of the installed pyspark (the package folder for a pip install)."""
    try:
        from pyspark.find_spark_home import _find_spark_home

        home = Path(_find_spark_home())
    except Exception:
        import pyspark

        home = Path(pyspark.__file__).resolve().parent
    if not (home / "bin" / "spark-class").exists():
        raise ClusterError(f"no bin/spark-class under SPARK_HOME {home}: is pyspark installed?")
    return home


def _reap(pid: int) -> None:
    """Collect a child of this process that has exited, so it stops counting as alive (no zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """True if `pid` runs a Spark daemon (not a zombie, not a recycled pid of something else)."""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc") / str(pid)
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        # a Spark daemon (deploy.Master/Worker) or the script running one (sbin/spark-daemon.sh ... SparkConnectServer)
        return b"org.apache.spark." in cmdline
    return True


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on `host` (for tests and `--port 0`-like use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read (created 0600, never world-readable in between)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def launch_detached(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session (so its process group can be signalled), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _last_error(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    found = FAILURE.findall(text)
    if found:
        return found[-1].strip()[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "empty log"


def wait_for(pattern: re.Pattern[str], log: Path, process: subprocess.Popen[bytes], what: str, deadline: float) -> str:
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if pattern.search(text):
            return text
        if process.poll() is not None:
            raise ClusterError(
                f"{what} exited with code {process.returncode} before it was ready: {_last_error(log)} (see {log})"
            )
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} not ready after the timeout: {_last_error(log)} (see {log})")
        time.sleep(0.2)


def _signal(pid: int, sig: signal.Signals) -> None:
    # each daemon leads its own session/process group; signal the group so its executors go too
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate(pids: list[int], grace: float = 15.0) -> list[int]:
    targets = [pid for pid in pids if pid_alive(pid)]
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in targets):
        time.sleep(0.2)
    for pid in targets:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in targets):
        time.sleep(0.1)
    return targets
