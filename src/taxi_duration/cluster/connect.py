"""A Spark Connect server on this machine, from the bundled `sbin/start-connect-server.sh` of the installed pyspark.

Every pipeline command then runs through it with `--remote` (or TAXI_DURATION_REMOTE): the client process holds
no JVM, as with Databricks Connect and Databricks serverless.

Secure by default: the gRPC endpoint binds to loopback, and clients must present a generated bearer token
(`spark.connect.authenticate.token`). The token travels in the connection URL, so the URL is kept in a 0600 file;
with the host `localhost` the pyspark client sends the token over a local channel without TLS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sys
import time
from dataclasses import asdict, dataclass
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

SERVER_READY = re.compile(r"Spark Connect server started at")
DEFAULT_PORT = 15002


@dataclass
class ConnectServerInfo:
    """What `start_connect_server` started; also the content of WORKSPACE/connect/server.json (without the token)."""

    pid: int
    host: str
    port: int
    master: str
    authenticate: bool
    url_file: str | None
    log: str
    startup_seconds: float

    @property
    def public_url(self) -> str:
        """The URL without the token (safe to print and log)."""
        return f"sc://{_client_host(self.host)}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "public_url": self.public_url}

    def client_instructions(self) -> str:
        if self.authenticate and self.url_file:
            return f'export TAXI_DURATION_REMOTE="$(cat {self.url_file})"\ntaxi-duration COMMAND ...'
        return f"taxi-duration --remote {self.public_url} COMMAND ..."


def connect_dir(workspace: Path) -> Path:
    return Path(workspace).resolve() / "connect"


def _client_host(host: str) -> str:
    # pyspark sends a token without TLS only to the literal host "localhost" (local channel credentials)
    return "localhost" if host in ("127.0.0.1", "localhost") else host


def _state_path(workspace: Path) -> Path:
    return connect_dir(workspace) / "server.json"


def _read_state(workspace: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        state: dict[str, Any] = json.loads(_state_path(workspace).read_text())
        return state
    return None


def start_connect_server(
    workspace: Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    master: str = "local[*]",
    driver_memory: str = "2g",
    authenticate: bool = True,
    extra_conf: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> ConnectServerInfo:
    """Start the Connect server in the background; return when it accepts connections."""
    workspace = Path(workspace)
    state = _read_state(workspace)
    if state and pid_alive(int(state.get("pid", 0))):
        raise ClusterError(f"a Connect server from workspace {workspace} is already running (pid {state['pid']})")
    if port_in_use(host, port):
        raise ClusterError(f"Connect port {host}:{port} is already in use")
    base = connect_dir(workspace)
    base.mkdir(parents=True, exist_ok=True)
    log = base / "connect-server.log"
    log.write_text("")
    token = secrets.token_urlsafe(32) if authenticate else None
    conf = {
        "spark.connect.grpc.binding.address": host,
        "spark.connect.grpc.binding.port": str(port),
        "spark.connect.grpc.port.maxRetries": "0",
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "America/New_York",
        "spark.driver.host": host,
        "spark.driver.bindAddress": host,
        # relative paths sent by clients resolve against the server's working directory: make that the workspace
        "spark.sql.warehouse.dir": str((workspace / "spark-warehouse").resolve()),
        **(extra_conf or {}),
    }
    properties = base / "connect-server.conf"
    lines = [f"{key}={value}" for key, value in conf.items()]
    if token:
        lines.append(f"spark.connect.authenticate.token={token}")
    write_private(properties, "\n".join(lines) + "\n")  # the token is in it: never on a command line
    home = spark_home()
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": host,
        "SPARK_LOG_DIR": str(base),
        "SPARK_PID_DIR": str(base),
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "TZ": "America/New_York",
    }
    command = [
        str(home / "sbin" / "start-connect-server.sh"),
        "--wait",
        "--master",
        master,
        "--driver-memory",
        driver_memory,
        "--properties-file",
        str(properties),
    ]
    started = time.monotonic()
    process = launch_detached(command, log, env)
    try:
        wait_for(SERVER_READY, log, process, f"Spark Connect server (pid {process.pid})", started + timeout)
    except BaseException:
        terminate([process.pid], grace=5.0)
        raise
    url_file: Path | None = None
    if token:
        url_file = base / "remote-url"
        write_private(url_file, f"sc://{_client_host(host)}:{port}/;token={token}\n")
    info = ConnectServerInfo(
        pid=process.pid,
        host=host,
        port=port,
        master=master,
        authenticate=authenticate,
        url_file=str(url_file) if url_file else None,
        log=str(log),
        startup_seconds=round(time.monotonic() - started, 2),
    )
    _state_path(workspace).write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info


def remote_url(workspace: Path) -> str:
    """The full client URL (with the token, if any) of this workspace's running server."""
    state = _read_state(workspace)
    if not state or not pid_alive(int(state.get("pid", 0))):
        raise ClusterError(
            f"no Connect server of workspace {workspace} is running; start it: `taxi-duration connect-server start`"
        )
    if state.get("url_file"):
        return Path(state["url_file"]).read_text().strip()
    return str(state["public_url"])


def connect_server_status(workspace: Path) -> dict[str, Any]:
    state = _read_state(workspace)
    if state is None:
        return {"running": False, "connect_dir": str(connect_dir(workspace))}
    running = pid_alive(int(state.get("pid", 0)))
    accepting = running and port_in_use(str(state["host"]), int(state["port"]))
    return {**state, "running": running, "accepting_connections": accepting}


def stop_connect_server(workspace: Path, grace: float = 15.0) -> list[int]:
    """Stop this workspace's Connect server (its whole process group); return the pids stopped."""
    state = _read_state(workspace)
    if not state:
        return []
    stopped = terminate([int(state.get("pid", 0))], grace)
    url_file = state.get("url_file")
    if url_file:
        Path(url_file).unlink(missing_ok=True)
    state.update(stopped=True, stopped_at=time.time())
    _state_path(workspace).write_text(json.dumps(state, indent=2) + "\n")
    return stopped
