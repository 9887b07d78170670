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
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taxi_duration.cluster.daemons import (
    ClusterError,
    launch_detached,
    pid_alive,
    port_in_use,
    spark_home,
    terminate,
    wait_for,
    write_private,
)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
MASTER_READY = re.compile(r"I have been elected leader|New state: ALIVE")
WORKER_READY = re.compile(r"Successfully registered with master")
MASTER_UI = re.compile(r"Bound MasterWebUI to \S+, and started at https?://[^:/\s]+:(\d+)")


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
