"""A Spark standalone cluster (one master, N workers) as plain processes, from the pip-installed pyspark.

The pyspark wheel ships `bin/spark-class` but not `sbin/start-master.sh`/`start-worker.sh`, so this module
does their job: it launches the master and the workers as detached processes, writes their logs, pid files and
a state file under WORKSPACE/cluster, waits until the master is ALIVE and every worker has registered, and
stops them again.

Secure by default: everything binds to loopback, the master's REST submission server is off, ports do not
silently move to the next free one, and with `authenticate=True` master, workers and clients share a generated
secret (`spark.authenticate`), kept in a 0600 file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taxi_duration.errors import TaxiDurationError

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
MASTER_READY = re.compile(r"I have been elected leader|New state: ALIVE")
WORKER_READY = re.compile(r"Successfully registered with master")
MASTER_UI = re.compile(r"Bound MasterWebUI to \S+, and started at https?://[^:/\s]+:(\d+)")
FAILURE = re.compile(r"(Exception|ERROR)[^\n]*")


class ClusterError(TaxiDurationError):
    """The standalone cluster could not be started, reached or stopped."""


@dataclass
class ClusterInfo:
    """What `start_cluster` started; also the content of WORKSPACE/cluster/cluster.json."""

    master_url: str
    host: str
    port: int
    webui_port: int
    master_pid: int
    worker_pids: list[int]
    workers: int
    cores: int
    memory: str
    authenticate: bool
    auth_conf: str | None
    cluster_dir: str
    logs: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    startup_seconds: float = 0.0

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "webui_url": self.webui_url}

    def client_instructions(self) -> str:
        """How to point the commands at this cluster, as shell lines."""
        lines = [f"taxi-duration --master {self.master_url} --driver-memory 1g COMMAND ..."]
        if self.authenticate and self.auth_conf:
            auth_json = str(Path(self.auth_conf).with_suffix(".json"))
            lines.insert(0, f'export TAXI_DURATION_SPARK_CONF="$(cat {auth_json})"')
            lines.append(f"spark-submit --master {self.master_url} --properties-file {self.auth_conf} ...")
        return "\n".join(lines)


def cluster_dir(workspace: Path) -> Path:
    return Path(workspace).resolve() / "cluster"


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


def _state_file(workspace: Path) -> Path:
    return cluster_dir(workspace) / "cluster.json"


def _read_state(workspace: Path) -> dict[str, Any] | None:
    path = _state_file(workspace)
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


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


def _daemon_properties(authenticate: bool, secret: str | None) -> str:
    props = {
        # no unauthenticated job submission over HTTP (port 6066)
        "spark.master.rest.enabled": "false",
        # fail on a taken port instead of silently moving to the next one
        "spark.port.maxRetries": "0",
        # the web UIs are read-only: no kill buttons
        "spark.ui.killEnabled": "false",
        # clean finished applications' work dirs after a day
        "spark.worker.cleanup.enabled": "true",
        "spark.worker.cleanup.appDataTtl": "86400",
    }
    if authenticate and secret:
        props["spark.authenticate"] = "true"
        props["spark.authenticate.secret"] = secret
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _launch(home: Path, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return launch_detached([str(home / "bin" / "spark-class"), *args], log, env)


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


def running_pids(workspace: Path) -> list[int]:
    """The pids of this workspace's cluster daemons that are still running."""
    state = _read_state(workspace)
    pids: list[int] = []
    if state:
        pids = [int(state.get("master_pid", 0)), *[int(pid) for pid in state.get("worker_pids", [])]]
    for pid_file in cluster_dir(workspace).glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pid_file.read_text().strip()))
    return sorted({pid for pid in pids if pid_alive(pid)})


def start_cluster(
    workspace: Path,
    workers: int = 2,
    cores: int = 1,
    memory: str = "1g",
    host: str = "127.0.0.1",
    port: int = 7077,
    webui_port: int = 8080,
    authenticate: bool = False,
    daemon_memory: str = "512m",
    timeout: float = 90.0,
) -> ClusterInfo:
    """Start a master and `workers` workers of `cores` cores and `memory` each; return when all are ready."""
    if workers < 1 or cores < 1:
        raise ClusterError(f"need at least one worker and one core, got workers={workers} cores={cores}")
    if not re.fullmatch(r"\d+[kmgt]?", memory.lower()):
        raise ClusterError(f"--memory: expected a size like 1g or 512m, found '{memory}'")
    workspace = Path(workspace)
    alive = running_pids(workspace)
    if alive:
        raise ClusterError(
            f"a cluster from workspace {workspace} is already running (pids {', '.join(map(str, alive))}); "
            "stop it first"
        )
    for what, number in (("master port", port), ("master web UI port", webui_port)):
        if number and port_in_use(host, number):
            raise ClusterError(f"{what} {host}:{number} is already in use")
    home = spark_home()
    base = cluster_dir(workspace)
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("*.pid"):
        stale.unlink()
    _state_file(workspace).unlink(missing_ok=True)

    secret = secrets.token_urlsafe(32) if authenticate else None
    properties = base / "spark-daemons.conf"
    write_private(properties, _daemon_properties(authenticate, secret))
    auth_conf: Path | None = None
    if authenticate and secret:
        auth_conf = base / "spark-auth.conf"
        write_private(auth_conf, f"spark.authenticate=true\nspark.authenticate.secret={secret}\n")
        # the same for `taxi-duration`, which reads extra Spark conf as JSON from TAXI_DURATION_SPARK_CONF
        auth = {"spark.authenticate": "true", "spark.authenticate.secret": secret}
        write_private(auth_conf.with_suffix(".json"), json.dumps(auth) + "\n")

    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": host,
        "SPARK_DAEMON_MEMORY": daemon_memory,
        # executors run Python with this interpreter unless the driver says otherwise
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "SPARK_CONF_DIR": str(base / "conf"),
    }
    (base / "conf").mkdir(exist_ok=True)
    for key in ("SPARK_MASTER_OPTS", "SPARK_WORKER_OPTS", "SPARK_DAEMON_JAVA_OPTS"):
        env.pop(key, None)

    started = time.monotonic()
    deadline = started + timeout
    processes: list[subprocess.Popen[bytes]] = []
    master_url = f"spark://{host}:{port}"
    log_files: dict[str, str] = {}
    try:
        master_log = logs / "master.log"
        master_log.write_text("")
        master = _launch(
            home,
            [
                MASTER_CLASS,
                "--host",
                host,
                "--port",
                str(port),
                "--webui-port",
                str(webui_port),
                "--properties-file",
                str(properties),
            ],
            master_log,
            env,
        )
        processes.append(master)
        (base / "master.pid").write_text(f"{master.pid}\n")
        log_files["master"] = str(master_log)
        text = wait_for(MASTER_READY, master_log, master, f"Spark master (pid {master.pid})", deadline)
        bound = MASTER_UI.search(text)
        actual_webui = int(bound.group(1)) if bound else webui_port

        worker_procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        for index in range(1, workers + 1):
            work_dir = base / "work" / f"worker-{index}"
            work_dir.mkdir(parents=True, exist_ok=True)
            worker_log = logs / f"worker-{index}.log"
            worker_log.write_text("")
            worker = _launch(
                home,
                [
                    WORKER_CLASS,
                    master_url,
                    "--host",
                    host,
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--work-dir",
                    str(work_dir),
                    "--webui-port",
                    "0",
                    "--properties-file",
                    str(properties),
                ],
                worker_log,
                env,
            )
            processes.append(worker)
            (base / f"worker-{index}.pid").write_text(f"{worker.pid}\n")
            log_files[f"worker-{index}"] = str(worker_log)
            worker_procs.append((worker, worker_log))
        for index, (worker, worker_log) in enumerate(worker_procs, start=1):
            wait_for(WORKER_READY, worker_log, worker, f"Spark worker {index} (pid {worker.pid})", deadline)
    except BaseException:
        for process in reversed(processes):
            terminate([process.pid], grace=5.0)
        for pid_file in base.glob("*.pid"):
            pid_file.unlink()
        raise

    info = ClusterInfo(
        master_url=master_url,
        host=host,
        port=port,
        webui_port=actual_webui,
        master_pid=master.pid,
        worker_pids=[worker.pid for worker, _ in worker_procs],
        workers=workers,
        cores=cores,
        memory=memory,
        authenticate=authenticate,
        auth_conf=str(auth_conf) if auth_conf else None,
        cluster_dir=str(base),
        logs=log_files,
        started_at=time.time(),
        startup_seconds=round(time.monotonic() - started, 2),
    )
    _state_file(workspace).write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info


def _fetch_master_json(host: str, webui_port: int, timeout: float = 5.0) -> dict[str, Any]:
    url = f"http://{host}:{webui_port}/json/"
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback HTTP of our own master
        payload: dict[str, Any] = json.loads(response.read().decode("utf-8"))
    return payload


def cluster_status(workspace: Path) -> dict[str, Any]:
    """Master URL, which daemons are alive, and the master's own view (workers, cores, memory, apps)."""
    state = _read_state(workspace)
    if state is None:
        return {"running": False, "cluster_dir": str(cluster_dir(workspace)), "alive_pids": []}
    master_pid = int(state.get("master_pid", 0))
    worker_pids = [int(pid) for pid in state.get("worker_pids", [])]
    alive = [pid for pid in [master_pid, *worker_pids] if pid_alive(pid)]
    status: dict[str, Any] = {
        "running": pid_alive(master_pid),
        "master_url": state.get("master_url"),
        "webui_url": state.get("webui_url"),
        "authenticate": state.get("authenticate", False),
        "auth_conf": state.get("auth_conf"),
        "cluster_dir": state.get("cluster_dir"),
        "master_pid": master_pid,
        "worker_pids": worker_pids,
        "alive_pids": alive,
    }
    if status["running"]:
        try:
            master = _fetch_master_json(str(state.get("host", "127.0.0.1")), int(state["webui_port"]))
        except (OSError, ValueError) as exc:
            status["master_error"] = f"{type(exc).__name__}: {exc}"
        else:
            alive_workers = [w for w in master.get("workers", []) if w.get("state") == "ALIVE"]
            status.update(
                {
                    "master_status": master.get("status"),
                    "workers": len(alive_workers),
                    "cores": sum(int(w.get("cores", 0)) for w in alive_workers),
                    "cores_used": sum(int(w.get("coresused", 0)) for w in alive_workers),
                    "memory_mb": sum(int(w.get("memory", 0)) for w in alive_workers),
                    "active_apps": [a.get("name") for a in master.get("activeapps", [])],
                    "completed_apps": len(master.get("completedapps", [])),
                }
            )
    return status


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


def stop_cluster(workspace: Path, grace: float = 15.0) -> list[int]:
    """Stop this workspace's cluster (workers first, SIGTERM then SIGKILL); return the pids that were stopped."""
    base = cluster_dir(workspace)
    state = _read_state(workspace) or {}
    worker_pids = [int(pid) for pid in state.get("worker_pids", [])]
    master_pid = int(state.get("master_pid", 0))
    from_files: list[int] = []
    for pid_file in base.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            from_files.append(int(pid_file.read_text().strip()))
    workers_first = [*worker_pids, *[pid for pid in from_files if pid not in worker_pids and pid != master_pid]]
    stopped = terminate(workers_first, grace)
    stopped += terminate([master_pid], grace)
    still = [pid for pid in stopped if pid_alive(pid)]
    if still:
        raise ClusterError(f"could not stop pids {', '.join(map(str, still))} (see {base / 'logs'})")
    for pid_file in base.glob("*.pid"):
        pid_file.unlink()
    if state:
        state["stopped_at"] = time.time()
        _state_file(workspace).write_text(json.dumps({**state, "stopped": True}, indent=2) + "\n")
    return sorted(set(stopped))
