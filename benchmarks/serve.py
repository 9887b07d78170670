"""Time serving: in-process single trips, the HTTP API under load, `mlflow models serve` of the Spark model, batch.

Usage: python benchmarks/serve.py [--workspace WS] [--seconds 10] [--batch-rows 1000000]

1. in-process: `ExportedModel.predict_minutes` on one trip at a time (real trips from the TLC sample), each call
   timed; also with the API's request validation (`Ride`) in front.
2. HTTP: `taxi-duration serve` (one uvicorn worker) on 127.0.0.1, loaded with wrk (one thread; a Lua script
   cycles through the real trips) at concurrency 1 and 16; latency percentiles from `wrk --latency`.
3. `mlflow models serve` of the same registered version's Spark model (flavor spark, `--env-manager local`): it
   runs the Spark pipeline per request, about a second or more each, so it gets fewer requests (sequential, then
   concurrency 4 for a while) from an aiohttp loop; the predictions of both servers for the same trips are
   compared (MLflow's Spark pyfunc returns ln(seconds): minutes = exp(x) / 60).
4. batch: `taxi-duration predict` on a canonical Parquet file of generated trips (real zone pairs and distances
   from the sample, pickup times spread over 2024), one process, wall time and peak RSS.
5. product: p99 at concurrency 1 of the plain server, with a shadow model, with the request log and a second plain
   server (the control), in interleaved wrk rounds on 3 sets of freshly started servers, with 95% bootstrap
   intervals (`--product-only` repeats this part; `--pool FILE...` pools saved runs' rounds into one sample);
   16 concurrent clients for 30 s with the log on, rows counted against answers; a 10 MB body's
   refusal time; schemathesis (`--fuzz N` examples per route) (install sizes: `install_size.py`).

Without --workspace the script ingests the real sample and trains gbt (default parameters) in a temp workspace.
Writes benchmarks/results/serve-<timestamp>.json and the "serve" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd

from _measure import REPO, machine, run_measured

BIN = Path(sys.executable).parent
CLI = str(BIN / "taxi-duration")
SAMPLE = REPO / "src" / "taxi_duration" / "data" / "taxis_sample_2019-03.csv"
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- serve:start -->", "<!-- serve:end -->"
PRODUCT_START, PRODUCT_END = "<!-- serve-product:start -->", "<!-- serve-product:end -->"
MODEL_NAME = "taxi-duration"
COORDINATES = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")

TARGET_IN_PROCESS_US = 50.0
TARGET_P99_C1_MS = 2.0
TARGET_RPS = 2000.0
TARGET_RATIO = 200.0
TARGET_DIFF_MINUTES = 1e-6


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def loads() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {loads()}] {message}", file=sys.stderr, flush=True)


def base_env() -> dict[str, str]:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def cli_json(workspace: Path, *args: str) -> dict[str, Any]:
    """One `taxi-duration` process; its last stdout line is the JSON result."""
    command = [CLI, "--workspace", str(workspace), *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=base_env(), check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{' '.join(args[:1])} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare_workspace(workspace: Path) -> dict[str, Any]:
    log(f"ingesting the real sample and training gbt (default parameters) in {workspace}")
    cli_json(workspace, "ingest", str(SAMPLE))
    trained = cli_json(workspace, "train", "--model", "gbt")
    return {"model_version": trained["model_version"], "rmsle": trained["metrics"]["rmsle"]}


# ---------------------------------------------------------------------------------------------- trips


def sample_rides() -> list[dict[str, Any]]:
    """Real trips from the TLC sample as API bodies, in file order; only those the API accepts."""
    from pydantic import ValidationError

    from taxi_duration.serve.models import Ride

    frame = pd.read_csv(SAMPLE)
    rides = []
    for row in frame.itertuples():
        body = {
            "PULocationID": int(row.PULocationID),
            "DOLocationID": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "pickup_datetime": str(row.tpep_pickup_datetime).replace(" ", "T"),
            "passenger_count": int(row.passenger_count),
        }
        try:
            Ride.model_validate(body)
        except ValidationError:
            continue
        rides.append(body)
    return rides


def mlflow_record(ride: dict[str, Any]) -> dict[str, Any]:
    """The same trip as a row of canonical trip columns for MLflow's Spark pyfunc (every column the pipeline's
    SQL reads must exist: coordinates are NULL here)."""
    return {
        "pickup_datetime": ride["pickup_datetime"].replace("T", " "),
        "pickup_location_id": ride["PULocationID"],
        "dropoff_location_id": ride["DOLocationID"],
        "trip_distance": ride["trip_distance"],
        **dict.fromkeys(COORDINATES),
    }


def minutes_from_ln_seconds(value: float) -> float:
    return math.exp(value) / 60.0


# ---------------------------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], ready: str, logfile: Path, timeout: float) -> Iterator[float]:
    """Start a server in its own process group, wait until `ready` answers 200, yield the start-up seconds, and
    stop the group (the server and whatever it started: uvicorn, the JVM)."""
    import httpx

    start = time.perf_counter()
    with logfile.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{command[0]} exited ({proc.returncode}):\n{logfile.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready, timeout=5).status_code == 200:
                        break
                if time.perf_counter() - start > timeout:
                    raise SystemExit(f"{ready} not ready after {timeout:.0f} s; see {logfile}")
                time.sleep(0.25)
            yield time.perf_counter() - start
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------- in-process


def time_calls(function: Callable[[Any], Any], inputs: list[Any], calls: int) -> dict[str, Any]:
    """Each call timed on its own (perf_counter_ns), cycling through `inputs`, after a warm-up."""
    for item in inputs[: min(len(inputs), 2000)]:
        function(item)
    durations = []
    clock = time.perf_counter_ns
    n = len(inputs)
    gc.collect()
    for i in range(calls):
        item = inputs[i % n]
        begin = clock()
        function(item)
        durations.append((clock() - begin) / 1000.0)
    return {
        "calls": calls,
        "median_us": round(statistics.median(durations), 2),
        "p99_us": round(percentile(durations, 99), 2),
        "mean_us": round(statistics.fmean(durations), 2),
        "load_1min": load(),
    }


def in_process(model: Any, rides: list[dict[str, Any]], calls: int) -> dict[str, Any]:
    from taxi_duration.serve.models import Ride

    trips = [Ride.model_validate(ride).trip() for ride in rides]
    log(f"in-process: {calls:,} single-trip predictions over {len(trips):,} real trips")
    model_only = time_calls(model.predict_minutes, trips, calls)
    log("in-process: the same with the API's validation (Ride) in front")
    validated = time_calls(lambda ride: model.predict_minutes(Ride.model_validate(ride).trip()), rides, calls // 4)
    return {"predict_minutes": model_only, "validate_and_predict": validated}


# ---------------------------------------------------------------------------------------------- wrk

LUA = """-- POST /predict, cycling through real trips from the TLC sample
local bodies = {
%s
}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/predict", nil, bodies[i])
end
"""

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise SystemExit(f"cannot parse a wrk latency: {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/sec, the --latency distribution, request count and errors from wrk's text output."""
    result: dict[str, Any] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    if not rps or not total:
        raise SystemExit(f"cannot parse wrk output:\n{output}")
    result["requests_per_s"] = round(float(rps.group(1)), 1)
    result["requests"] = int(total.group(1))
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, flags=re.MULTILINE):
        result[f"p{pct}_ms"] = round(to_ms(value), 3)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["errors"] = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    )
    return result


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(script)]
    before = load()
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    return {
        "client": "wrk -t1",
        "concurrency": connections,
        "seconds": seconds,
        **parse_wrk(done.stdout),
        "load_1min": before,
    }


# ---------------------------------------------------------------------------------------------- aiohttp


async def _aio_load(
    url: str, payloads: list[Any], concurrency: int, count: int | None, seconds: float | None
) -> dict[str, Any]:
    """POST payloads (cycled) with `concurrency` workers, until `count` requests or `seconds` have passed."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    answers: list[tuple[int, Any]] = []
    sent = 0
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=concurrency)
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else math.inf

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def worker() -> None:
            nonlocal sent
            while (count is None or sent < count) and time.perf_counter() < deadline:
                index = sent
                sent += 1
                begin = time.perf_counter()
                try:
                    async with session.post(url, json=payloads[index % len(payloads)]) as response:
                        body = await response.json(content_type=None)
                        status = response.status
                except aiohttp.ClientError:
                    body, status = None, -1
                latencies.append((time.perf_counter() - begin) * 1000.0)
                statuses[status] = statuses.get(status, 0) + 1
                answers.append((index, body))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 3),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "errors": sum(n for status, n in statuses.items() if status != 200),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "answers": sorted(answers, key=lambda pair: pair[0]),
    }


def aio_load(
    url: str, payloads: list[Any], concurrency: int, count: int | None = None, seconds: float | None = None
) -> dict[str, Any]:
    before = load()
    result = asyncio.run(_aio_load(url, payloads, concurrency, count, seconds))
    return {"client": "aiohttp", **result, "load_1min": before}


def strip_answers(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "answers"}


# ---------------------------------------------------------------------------------------------- batch


def batch_file(rides: list[dict[str, Any]], rows: int, path: Path, seed: int = 7) -> Path:
    """`rows` canonical trips: zone pairs and distances drawn from the real sample, pickups spread over 2024."""
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(rides), size=rows)
    pu = np.array([r["PULocationID"] for r in rides], dtype=np.int32)[picked]
    do = np.array([r["DOLocationID"] for r in rides], dtype=np.int32)[picked]
    miles = np.array([r["trip_distance"] for r in rides], dtype=np.float64)[picked]
    passengers = np.array([r["passenger_count"] for r in rides], dtype=np.int32)[picked]
    pickups = np.datetime64("2024-01-01T00:00:00") + rng.integers(0, 366 * 86400, size=rows).astype("timedelta64[s]")
    frame = pd.DataFrame(
        {
            "pickup_datetime": pickups.astype("datetime64[us]"),
            "pickup_location_id": pu,
            "dropoff_location_id": do,
            "trip_distance": miles,
            "passenger_count": passengers,
        }
    )
    frame.to_parquet(path, index=False)
    return path


def batch(workspace: Path, rides: list[dict[str, Any]], rows: int, model: Any, folder: Path) -> dict[str, Any]:
    source = batch_file(rides, rows, folder / f"trips_{rows}.parquet")
    target = folder / f"trips_{rows}.predictions.parquet"
    log(f"batch: taxi-duration predict on {rows:,} canonical trips ({source.stat().st_size / 2**20:.0f} MB Parquet)")
    before = load()
    command = [CLI, "--workspace", str(workspace), "predict", str(source), "--out", str(target), "--json"]
    measured = run_measured(command, env=base_env())
    if measured.returncode != 0:
        sys.stderr.write(measured.stderr[-3000:])
        raise SystemExit(f"predict failed (exit {measured.returncode})")
    payload = json.loads(measured.stdout.strip().splitlines()[-1])
    scored = pd.read_parquet(target)
    check = scored.sample(2000, random_state=1)
    expected = model.predict_batch(check)
    return {
        "rows": payload["rows"],
        "predicted": payload["predicted"],
        "model_version": payload["model_version"],
        "predict_seconds": round(payload["seconds"], 2),
        "trips_per_s": round(payload["rows"] / payload["seconds"]),
        "process_wall_s": round(measured.seconds, 2),
        "trips_per_s_wall": round(payload["rows"] / measured.seconds),
        "peak_rss_mb": round(measured.peak_rss_mb),
        "max_abs_diff_vs_in_process_min": float(np.max(np.abs(check["predicted_duration_minutes"] - expected))),
        "load_1min": before,
    }


# ---------------------------------------------------------------------------------------------- product


def refused_10mb_ms(url: str, attempts: int = 5) -> dict[str, Any]:
    """Time from sending a 10 MB POST /predict (headers, then the body) to the first byte of the answer."""
    port = int(url.rsplit(":", 1)[1])
    body = b'{"x": "' + b"a" * (10 * 2**20 - 9) + b'"}'
    header = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    times, statuses = [], []
    for _ in range(attempts):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            begin = time.perf_counter()
            sock.sendall(header)
            sock.setblocking(False)
            sent, answer = 0, b""
            while not answer:
                with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                    if sent < len(body):
                        sent += sock.send(body[sent : sent + 65536])
                with contextlib.suppress(BlockingIOError):
                    answer = sock.recv(4096)
            times.append((time.perf_counter() - begin) * 1000.0)
            statuses.append(answer.split(b" ", 2)[1].decode())
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2), "statuses": statuses}


def fuzz(url: str, examples: int) -> dict[str, Any]:
    """Schemathesis over the live API: `examples` generated requests per route, no 5xx, conformance checks."""
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    command = [str(BIN / "st"), "run", f"{url}/openapi.json", "--max-examples", str(examples), "--checks", checks]
    command += ["--phases", "examples,coverage,fuzzing", "--no-color"]
    begin = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=base_env(), check=False)
    summary = [line for line in done.stdout.splitlines() if line.strip()][-12:]
    return {
        "examples_per_route": examples,
        "exit_code": done.returncode,
        "seconds": round(time.perf_counter() - begin, 1),
        "summary": summary,
    }


PRODUCT_SERVERS = ("plain", "shadow", "request_log", "plain_again")


def product(
    workspace: Path,
    rides: list[dict[str, Any]],
    seconds: int,
    rounds: int,
    sets: int,
    shadow_dir: Path,
    tmp: Path,
    fuzz_n: int,
) -> dict[str, Any]:
    """Shadow and request log against the plain server (p99 at concurrency 1, interleaved rounds on `sets` sets of
    freshly started servers), no request lost from the log under 16 concurrent clients, the 10 MB body refusal,
    and schemathesis."""
    script = tmp / "product.lua"
    script.write_text(LUA % ",\n".join(f"  [==[{json.dumps(ride)}]==]" for ride in rides), encoding="utf-8")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PRODUCT_SERVERS}
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "sets": sets}
    per_set = max(1, rounds // sets)
    for set_ in range(sets):
        # each set starts its own servers: one server process can run a few percent faster or slower than an
        # identical one for as long as it lives (where its memory and threads land), so the figures pool several
        options = {
            "plain": [],
            "shadow": ["--shadow-dir", str(shadow_dir)],
            "request_log": ["--request-log", str(tmp / f"request-log-{set_}")],
            # a second plain server, the control: how far apart two identical servers measure in the same rounds
            "plain_again": [],
        }
        with contextlib.ExitStack() as stack:
            urls = {}
            for name in PRODUCT_SERVERS:
                port = free_port()
                urls[name] = f"http://127.0.0.1:{port}"
                command = [CLI, "--workspace", str(workspace), "serve", "--port", str(port), "--poll-seconds", "0"]
                log_file = tmp / f"serve-{name}-{set_}.log"
                stack.enter_context(
                    server([*command, *options[name]], base_env(), f"{urls[name]}/ready", log_file, 120)
                )
                run_wrk(urls[name], script, 4, 3)  # warm-up
            log(
                f"product: set {set_ + 1} of {sets}: {per_set} interleaved rounds of wrk c1 x {seconds} s on "
                f"{', '.join(PRODUCT_SERVERS)}, rotated"
            )
            names = list(urls)
            for round_ in range(per_set):
                # each round starts one server later: every server runs first, second, ... as often (a drift of the
                # machine during a round does not always land on the same one)
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    runs[name].append({**run_wrk(urls[name], script, 1, seconds), "set": set_})
            if set_ == sets - 1:
                out["refused_10mb"] = refused_10mb_ms(urls["plain"])
                if fuzz_n > 0:
                    log(f"product: schemathesis, {fuzz_n} examples per route")
                    out["fuzz"] = fuzz(urls["plain"], fuzz_n)
    for name, results in runs.items():
        out[name] = {
            "p99_ms_median": round(statistics.median(r["p99_ms"] for r in results), 3),
            "p50_ms_median": round(statistics.median(r["p50_ms"] for r in results), 3),
            "requests_per_s_median": round(statistics.median(r["requests_per_s"] for r in results)),
            "runs": results,
        }
    plain = out["plain"]["p99_ms_median"]
    for name in ("shadow", "request_log", "plain_again"):
        out[f"{name}_p99_ratio"] = round(out[name]["p99_ms_median"] / plain, 3)
        # paired: each round's p99 over the plain server's in the same round, the median of those ratios
        paired = [r["p99_ms"] / base["p99_ms"] for r, base in zip(runs[name], runs["plain"], strict=True)]
        out[f"{name}_p99_paired_ratio"] = round(statistics.median(paired), 3)
        out[f"{name}_p99_ratio_interval"] = ratio_interval(runs[name], runs["plain"])
        out[f"{name}_p99_ratio_by_set"] = [
            round(
                statistics.median(r["p99_ms"] for r in runs[name] if r["set"] == k)
                / statistics.median(r["p99_ms"] for r in runs["plain"] if r["set"] == k),
                3,
            )
            for k in range(sets)
        ]
    # no request lost: 16 concurrent clients for 30 s, then the server stops (flushing the log) and rows are counted
    folder = tmp / "loss-log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [CLI, "--workspace", str(workspace), "serve", "--port", str(port), "--poll-seconds", "0"]
    with server([*command, "--request-log", str(folder)], base_env(), f"{url}/ready", tmp / "serve-loss.log", 120):
        log("product: 16 concurrent clients for 30 s with the request log on")
        loaded = strip_answers(aio_load(f"{url}/predict", rides, 16, seconds=30))
    import pyarrow.parquet as pq

    files = sorted(folder.glob("requests-*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    out["log_16_clients"] = {
        **loaded,
        "answered_200": loaded["statuses"].get("200", 0),
        "rows_logged": rows,
        "files": len(files),
        "leftover_part_files": len(list(folder.glob(".*"))),
    }
    return out


def ratio_interval(
    runs: list[dict[str, Any]], base: list[dict[str, Any]], draws: int = 2000, seed: int = 11
) -> list[float]:
    """A 95% bootstrap interval of the ratio of median p99s: rounds drawn again with replacement within each set of
    servers, both servers' figures of a drawn round together (so the machine's moment stays paired)."""
    rng = random.Random(seed)
    by_set: dict[Any, list[int]] = {}
    for i, r in enumerate(runs):
        by_set.setdefault(r.get("stratum", r.get("set", 0)), []).append(i)
    ratios = []
    for _ in range(draws):
        drawn = [i for indices in by_set.values() for i in rng.choices(indices, k=len(indices))]
        ratios.append(
            statistics.median(runs[i]["p99_ms"] for i in drawn) / statistics.median(base[i]["p99_ms"] for i in drawn)
        )
    ratios.sort()
    return [round(ratios[int(0.025 * draws)], 3), round(ratios[int(0.975 * draws) - 1], 3)]


def pool(paths: list[Path]) -> dict[str, Any]:
    """The product rounds of several saved runs (full or `--product-only`) as one sample: each variant's ratio of
    median p99s to the plain server's, the median of the rounds' own ratios and the 95% bootstrap interval, rounds
    drawn again within each run's each set of servers."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PRODUCT_SERVERS}
    for k, path in enumerate(paths):
        p = json.loads(path.read_text(encoding="utf-8"))["product"]
        for name in PRODUCT_SERVERS:
            runs[name] += [{**r, "stratum": f"{k}:{r.get('set', 0)}"} for r in p[name]["runs"]]
    out: dict[str, Any] = {"runs": [path.name for path in paths], "rounds": len(runs["plain"])}
    plain = [r["p99_ms"] for r in runs["plain"]]
    for name in PRODUCT_SERVERS[1:]:
        p99 = [r["p99_ms"] for r in runs[name]]
        out[name] = {
            "p99_ratio": round(statistics.median(p99) / statistics.median(plain), 3),
            "p99_paired_ratio": round(statistics.median(a / b for a, b in zip(p99, plain, strict=True)), 3),
            "p99_ratio_interval": ratio_interval(runs[name], runs["plain"]),
        }
    return out


def route_ab(model_dir: Path, rides: list[dict[str, Any]], seconds: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """The prediction route's class side by side: two servers of the same exported model started by the same
    script (`_serve_app.py`), one with `FastJsonRoute` (what `serve` uses), one with FastAPI's own `APIRoute`;
    wrk at concurrency 1 and 16 on each in turn, `rounds` interleaved rounds, medians."""
    script = tmp / "route.lua"
    script.write_text(LUA % ",\n".join(f"  [==[{json.dumps(ride)}]==]" for ride in rides), encoding="utf-8")
    launcher = [sys.executable, str(Path(__file__).with_name("_serve_app.py")), str(model_dir)]
    variants = {"fast_route": [], "standard_route": ["--standard-route"]}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"c1": [], "c16": []} for name in variants}
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, extra in variants.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            command = [*launcher, str(port), *extra]
            stack.enter_context(server(command, base_env(), f"{urls[name]}/ready", tmp / f"serve-{name}.log", 120))
            run_wrk(urls[name], script, 4, 3)  # warm-up
        log(f"route A/B: {rounds} interleaved rounds of wrk c1 and c16 x {seconds} s, FastJsonRoute vs APIRoute")
        for _ in range(rounds):
            for name, url in urls.items():
                runs[name]["c1"].append(run_wrk(url, script, 1, seconds))
                runs[name]["c16"].append(run_wrk(url, script, 16, seconds))
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds}
    for name, by_concurrency in runs.items():
        out[name] = {
            "c1_p99_ms_median": round(statistics.median(r["p99_ms"] for r in by_concurrency["c1"]), 3),
            "c1_p50_ms_median": round(statistics.median(r["p50_ms"] for r in by_concurrency["c1"]), 3),
            "c16_requests_per_s_median": round(statistics.median(r["requests_per_s"] for r in by_concurrency["c16"])),
            "runs": by_concurrency,
        }
    out["c16_throughput_ratio"] = round(
        out["fast_route"]["c16_requests_per_s_median"] / out["standard_route"]["c16_requests_per_s_median"], 3
    )
    return out


# ---------------------------------------------------------------------------------------------- servers


def http_ours(workspace: Path, rides: list[dict[str, Any]], seconds: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [CLI, "--workspace", str(workspace), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--poll-seconds", "0"]
    script = tmp / "predict.lua"
    script.write_text(LUA % ",\n".join(f"  [==[{json.dumps(ride)}]==]" for ride in rides), encoding="utf-8")
    out: dict[str, Any] = {}
    with server(command, base_env(), f"{url}/ready", tmp / "serve.log", 120) as startup:
        out["startup_s"] = round(startup, 2)
        log(f"taxi-duration serve ready in {startup:.1f} s; warm-up, then wrk at concurrency 1 and 16 ({seconds} s)")
        run_wrk(url, script, 4, 3)
        out["c1"] = run_wrk(url, script, 1, seconds)
        out["c16"] = run_wrk(url, script, 16, seconds)
        log(f"ours: {out['c1']['requests_per_s']:,} req/s at c1, {out['c16']['requests_per_s']:,} req/s at c16")
    return out


def compare_servers(
    workspace: Path,
    model: Any,
    version: str,
    rides: list[dict[str, Any]],
    tmp: Path,
    compare_count: int,
    mlflow_sequential: int,
    mlflow_seconds: int,
    mlflow_concurrency: int,
) -> dict[str, Any]:
    """Both servers up: the same trips through each; then MLflow's Spark server under light load."""
    ours_port, mlflow_port = free_port(), free_port()
    ours_url, mlflow_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{mlflow_port}"
    ours_cmd = [CLI, "--workspace", str(workspace), "serve", "--host", "127.0.0.1", "--port", str(ours_port)]
    ours_cmd += ["--poll-seconds", "0"]
    dfs_tmp = workspace / "tmp" / "mlflow-dfs"
    dfs_tmp.mkdir(parents=True, exist_ok=True)
    mlflow_env = {
        **base_env(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{(workspace / 'mlflow.db').resolve()}",
        "MLFLOW_DFS_TMP": str(dfs_tmp.resolve()),
        # canonical pickup times are wall-clock strings: a UTC JVM (no DST gaps) keeps them as they are
        "TZ": "UTC",
    }
    mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}/{version}"]
    mlflow_cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
    out: dict[str, Any] = {}
    trips = rides[:compare_count]
    with (
        server(ours_cmd, base_env(), f"{ours_url}/ready", tmp / "serve-compare.log", 120),
        server(mlflow_cmd, mlflow_env, f"{mlflow_url}/ping", tmp / "mlflow-serve.log", 600) as mlflow_startup,
    ):
        out["mlflow_startup_s"] = round(mlflow_startup, 2)
        log(f"mlflow models serve (spark flavor) ready in {mlflow_startup:.1f} s")

        # the same trips through both servers (and the in-process model)
        ours = aio_load(f"{ours_url}/predict", trips, 1, count=len(trips))
        ours_minutes = [body["duration_minutes"] for _, body in ours["answers"]]
        log(f"mlflow: {len(trips)} trips in one request for the comparison")
        begin = time.perf_counter()
        batch_answer = aio_load(
            f"{mlflow_url}/invocations", [{"dataframe_records": [mlflow_record(t) for t in trips]}], 1, count=1
        )
        batch_seconds = time.perf_counter() - begin
        if batch_answer["errors"]:
            raise SystemExit(f"mlflow server failed: {batch_answer['answers'][0][1]}")
        spark_minutes = [minutes_from_ln_seconds(x) for x in batch_answer["answers"][0][1]["predictions"]]
        from taxi_duration.serve.models import Ride

        local_minutes = [model.predict_minutes(Ride.model_validate(t).trip()) for t in trips]
        diffs = np.abs(np.asarray(ours_minutes) - np.asarray(spark_minutes))
        out["comparison"] = {
            "trips": len(trips),
            "max_abs_diff_minutes": float(diffs.max()),
            "max_abs_diff_in_process_vs_ours": float(np.max(np.abs(np.asarray(local_minutes) - ours_minutes))),
            "mlflow_batch_request_s": round(batch_seconds, 2),
            "mean_predicted_minutes": round(float(np.mean(ours_minutes)), 3),
        }
        log(f"comparison: max |ours - mlflow spark| = {diffs.max():.3g} min over {len(trips)} trips")

        payloads = [{"dataframe_records": [mlflow_record(t)]} for t in rides]
        aio_load(f"{mlflow_url}/invocations", payloads[-3:], 1, count=3)  # warm-up
        log(f"mlflow: {mlflow_sequential} sequential single-trip requests")
        sequential = aio_load(f"{mlflow_url}/invocations", payloads, 1, count=mlflow_sequential)
        log(f"mlflow: concurrency {mlflow_concurrency} for {mlflow_seconds} s")
        concurrent = aio_load(f"{mlflow_url}/invocations", payloads, mlflow_concurrency, seconds=mlflow_seconds)
        for result in (sequential, concurrent):
            answered = [(i, body) for i, body in result["answers"] if isinstance(body, dict) and "predictions" in body]
            result["max_abs_diff_vs_in_process_min"] = max(
                abs(
                    minutes_from_ln_seconds(body["predictions"][0])
                    - model.predict_minutes(Ride.model_validate(rides[i % len(rides)]).trip())
                )
                for i, body in answered
            )
        out["mlflow_c1"] = strip_answers(sequential)
        out[f"mlflow_c{mlflow_concurrency}"] = strip_answers(concurrent)
        log(
            f"mlflow: {sequential['requests_per_s']:.2f} req/s sequential, "
            f"{concurrent['requests_per_s']:.2f} req/s at concurrency {mlflow_concurrency}"
        )
    return out


# ---------------------------------------------------------------------------------------------- report


def same_as_in_process(batch_result: dict[str, Any]) -> str:
    diff = batch_result["max_abs_diff_vs_in_process_min"]
    if diff == 0:
        return "equal the in-process model's exactly"
    return f"are within {diff:.2g} min of the in-process model's"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    ours, mlflow = results["http"], results["mlflow"]
    ip = results["in_process"]["predict_minutes"]
    mlflow_runs = [v for k, v in mlflow.items() if k.startswith("mlflow_c")]
    best_mlflow = max(r["requests_per_s"] for r in mlflow_runs)
    best_ours = max(ours["c1"]["requests_per_s"], ours["c16"]["requests_per_s"])
    return {
        "in_process_median_us": ip["median_us"],
        "in_process_p99_us": ip["p99_us"],
        "in_process_ok": ip["median_us"] <= TARGET_IN_PROCESS_US and ip["p99_us"] <= TARGET_IN_PROCESS_US,
        "http_c1_p99_ms": ours["c1"]["p99_ms"],
        "http_c1_ok": ours["c1"]["p99_ms"] <= TARGET_P99_C1_MS,
        "http_best_rps": best_ours,
        "http_rps_ok": best_ours >= TARGET_RPS,
        "mlflow_best_rps": best_mlflow,
        "throughput_ratio": round(best_ours / best_mlflow, 1),
        "ratio_ok": best_ours / best_mlflow >= TARGET_RATIO,
        "max_abs_diff_minutes": mlflow["comparison"]["max_abs_diff_minutes"],
        "identical_ok": mlflow["comparison"]["max_abs_diff_minutes"] <= TARGET_DIFF_MINUTES,
        "batch_trips_per_s": results["batch"]["trips_per_s"],
    }


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    ip = results["in_process"]
    ours, mlflow, b = results["http"], results["mlflow"], results["batch"]
    cmp_ = mlflow["comparison"]
    mlflow_runs = [(k, v) for k, v in mlflow.items() if k.startswith("mlflow_c")]
    lines = [
        START,
        "## Serving: in-process, HTTP API, `mlflow models serve`, batch file",
        "",
        "`python benchmarks/serve.py` (optionally `--workspace WS` of a trained workspace) measures the exported",
        "champion scored in plain Python, behind the API (`taxi-duration serve`, one uvicorn worker, 127.0.0.1),",
        "next to `mlflow models serve` of the same registered version's Spark model (flavor spark,",
        "`--env-manager local`) in the same run, and `taxi-duration predict` on a Parquet file.",
        "Raw results: `benchmarks/results/serve-*.json`.",
        "",
        "Targets (issue): one trip in-process ≤ 50 µs; HTTP p99 ≤ 2 ms at concurrency 1 and ≥ 2,000 requests/s;",
        "≥ 200x the throughput of `mlflow models serve` of the Spark model, with identical predictions (≤ 1e-6 min).",
        "",
        f"Measured {results['date']} on {results['machine']}.",
        f"Load average (1/5/15 min): {results['load_start']} at the start, {results['load_end']} at the end; the",
        "machine is shared with other jobs, so each row also gives the 1-minute load average when it started.",
        f"Model: `{MODEL_NAME}` v{results['model']['version']} ({results['model']['kind']}, "
        f"{results['model']['detail']}), trained on the real TLC sample (`taxis_sample_2019-03.csv`); requests cycle",
        f"through {results['rides']:,} real trips of that sample (zone ids, distance, pickup time).",
        "",
        "| measurement | figure | target | met | load avg (1 min) |",
        "|---|---:|---|---|---:|",
        f"| in-process `predict_minutes`, one trip ({ip['predict_minutes']['calls']:,} calls) | median "
        f"{ip['predict_minutes']['median_us']} µs, p99 {ip['predict_minutes']['p99_us']} µs | ≤ 50 µs | "
        f"{verdict(s['in_process_ok'])} | {ip['predict_minutes']['load_1min']} |",
        f"| in-process request validation (`Ride`) + prediction ({ip['validate_and_predict']['calls']:,} calls) | "
        f"median {ip['validate_and_predict']['median_us']} µs, p99 {ip['validate_and_predict']['p99_us']} µs | | | "
        f"{ip['validate_and_predict']['load_1min']} |",
        f"| HTTP `/predict`, concurrency 1 (wrk, {ours['c1']['seconds']} s) | p99 {ours['c1']['p99_ms']} ms, "
        f"{ours['c1']['requests_per_s']:,.0f} req/s | p99 ≤ 2 ms | {verdict(s['http_c1_ok'])} | "
        f"{ours['c1']['load_1min']} |",
        f"| HTTP `/predict`, concurrency 16 (wrk, {ours['c16']['seconds']} s) | {ours['c16']['requests_per_s']:,.0f} "
        f"req/s, p99 {ours['c16']['p99_ms']} ms | ≥ 2,000 req/s | {verdict(s['http_rps_ok'])} | "
        f"{ours['c16']['load_1min']} |",
        f"| throughput vs `mlflow models serve` (Spark), best of each | {s['throughput_ratio']:,.0f}x "
        f"({s['http_best_rps']:,.0f} vs {s['mlflow_best_rps']:.2f} req/s) | ≥ 200x | {verdict(s['ratio_ok'])} | |",
        f"| same {cmp_['trips']} trips through both servers | max difference {cmp_['max_abs_diff_minutes']:.2g} min "
        f"| ≤ 1e-6 min | {verdict(s['identical_ok'])} | |",
        f"| batch: `taxi-duration predict`, {b['rows']:,} trips (Parquet) | {b['trips_per_s']:,} trips/s "
        f"({b['predict_seconds']} s scoring; {b['process_wall_s']} s for the whole process, peak RSS "
        f"{b['peak_rss_mb']:,} MB) | | | {b['load_1min']} |",
        "",
        "| server | client | concurrency | requests | req/s | p50 (ms) | p75 (ms) | p90 (ms) | p99 (ms) | errors "
        "| load avg (1 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("c1", "c16"):
        r = ours[key]
        lines.append(
            f"| `taxi-duration serve` | wrk, {r['seconds']} s | {r['concurrency']} | {r['requests']:,} | "
            f"{r['requests_per_s']:,.0f} | {r['p50_ms']} | {r['p75_ms']} | {r['p90_ms']} | {r['p99_ms']} | "
            f"{r['errors']} | {r['load_1min']} |"
        )
    for _, r in mlflow_runs:
        how = f"aiohttp, {r['requests']} requests" if r["concurrency"] == 1 else f"aiohttp, {r['elapsed_s']:.0f} s"
        lines.append(
            f"| `mlflow models serve` (Spark) | {how} | {r['concurrency']} | {r['requests']:,} | "
            f"{r['requests_per_s']:.2f} | {r['p50_ms']:,.0f} | | | {r['p99_ms']:,.0f} | {r['errors']} | "
            f"{r['load_1min']} |"
        )
    lines += [
        "",
        f"Notes: wrk runs one thread (`-t1`, the second core stays for the server) with a Lua script cycling "
        f"through the trips, after a 3 s warm-up; `taxi-duration serve` started in {ours['startup_s']} s. "
        f"MLflow's Spark server runs the whole Spark pipeline (local[1]) per request, about "
        f"{mlflow['mlflow_c1']['p50_ms'] / 1000:.1f} s each, so it was measured with fewer requests "
        f"({mlflow['mlflow_c1']['requests']} sequential, then concurrency "
        f"{mlflow_runs[-1][1]['concurrency']} for {mlflow_runs[-1][1]['elapsed_s']:.0f} s) from an aiohttp loop; it "
        f"started in {mlflow['mlflow_startup_s']} s (JVM and model load) and scored the {cmp_['trips']} comparison "
        f"trips in one request in {cmp_['mlflow_batch_request_s']} s. Its output is ln(seconds), converted with "
        "exp(x)/60; it is sent the canonical trip columns with NULL coordinates. The batch file holds trips drawn "
        "from the sample's zone pairs and distances with pickup times spread over 2024; the scoring time is what "
        "`predict` reports (reading the file and scoring), the process time adds Python start-up and fetching the "
        f"model from MLflow; on 2,000 of its rows the file's predictions {same_as_in_process(b)}.",
        END,
    ]
    return "\n".join(lines)


def paired(product_results: dict[str, Any], name: str) -> str:
    """`; paired 1.02x`: the median of the rounds' own ratios to the plain server (absent in older results)."""
    ratio = product_results.get(f"{name}_p99_paired_ratio")
    interval = product_results.get(f"{name}_p99_ratio_interval")
    by_set = product_results.get(f"{name}_p99_ratio_by_set")
    text = "" if ratio is None else f"; round by round {ratio:.2f}x"
    if interval is not None:
        text += f"; 95% interval {interval[0]:.2f}x-{interval[1]:.2f}x"
    if by_set is not None and len(by_set) > 1:
        text += f"; by set of servers {', '.join(f'{r:.2f}x' for r in by_set)}"
    return text


def markdown_product(results: dict[str, Any]) -> str:
    p = results["product"]
    plain, shadow, logged = p["plain"], p["shadow"], p["request_log"]
    loss = p["log_16_clients"]
    lines = [
        PRODUCT_START,
        "## Serving as a product: shadow, request log, body limits, fuzzing",
        "",
        f"Same run as above ({results['date']}). Four `taxi-duration serve` processes on the same champion: plain, "
        "with a shadow model (`--shadow-dir`: the champion's exported folder, so the shadow costs what a challenger "
        "of the same size costs: a second walk of the trees per ride), with the request log on "
        "(`--request-log`) and plain again (the control); "
        f"wrk at concurrency 1 for {p['seconds']} s on each in turn, {p['rounds']} rounds (each starting one server "
        "later than the one before)"
        + (
            f" on {p['sets']} sets of freshly started servers ({p['rounds'] // p['sets']} rounds each)"
            if p.get("sets", 1) > 1
            else ""
        )
        + ", medians of the rounds' figures; \"round by round\": the median of each round's ratio to the plain "
        "server's p99 in the same round; the 95% interval is the bootstrap's (rounds drawn again within each set).",
        "",
        "| measurement | figure | target | met |",
        "|---|---:|---|---|",
        f"| p99 at concurrency 1, plain | {plain['p99_ms_median']} ms (p50 {plain['p50_ms_median']} ms, "
        f"{plain['requests_per_s_median']:,} req/s) | ≤ 2 ms | {verdict(plain['p99_ms_median'] <= TARGET_P99_C1_MS)} |",
        f"| p99 with the shadow model | {shadow['p99_ms_median']} ms ({p['shadow_p99_ratio']:.2f}x plain"
        f"{paired(p, 'shadow')}) | ≤ 1.20x | {verdict(p['shadow_p99_ratio'] <= 1.2)} |",
        f"| p99 with the request log | {logged['p99_ms_median']} ms ({p['request_log_p99_ratio']:.2f}x plain"
        f"{paired(p, 'request_log')}) | ≤ 1.10x | {verdict(p['request_log_p99_ratio'] <= 1.1)} |",
    ]
    if "plain_again" in p:
        lines.append(
            f"| control: a second plain server in the same rounds | {p['plain_again']['p99_ms_median']} ms "
            f"({p['plain_again_p99_ratio']:.2f}x plain{paired(p, 'plain_again')}) | (the noise between identical "
            "servers) | |"
        )
    lines += [
        f"| request log, 16 concurrent clients for {loss['elapsed_s']:.0f} s | {loss['answered_200']:,} answered, "
        f"{loss['rows_logged']:,} rows in {loss['files']} files, {loss['leftover_part_files']} part files left | "
        f"no request lost | {verdict(loss['answered_200'] == loss['rows_logged'] and loss['errors'] == 0)} |",
        f"| a 10 MB body refused | median {p['refused_10mb']['median_ms']} ms, max {p['refused_10mb']['max_ms']} ms "
        f"(statuses {', '.join(sorted(set(p['refused_10mb']['statuses'])))}) | < 100 ms | "
        f"{verdict(p['refused_10mb']['max_ms'] < 100)} |",
    ]
    if "fuzz" in p:
        f = p["fuzz"]
        lines.append(
            f"| schemathesis, {f['examples_per_route']:,} examples per route (no 5xx, status codes, content types, "
            f"bodies conform) | exit {f['exit_code']} in {f['seconds']} s | 0 failures | "
            f"{verdict(f['exit_code'] == 0)} |"
        )
    lines += [
        "",
        "| server | round p99s (ms) | round req/s |",
        "|---|---|---|",
    ]
    for name in ("plain", "shadow", "request_log", "plain_again"):
        if name not in p:
            continue
        runs = p[name]["runs"]
        lines.append(
            f"| {name.replace('_', ' ')} | {', '.join(str(r['p99_ms']) for r in runs)} | "
            f"{', '.join(format(r['requests_per_s'], ',.0f') for r in runs)} |"
        )
    if "fuzz" in p:
        lines += ["", "Schemathesis summary:", "", "```", *p["fuzz"]["summary"], "```"]
    if "route_ab" in results:
        lines += ["", *markdown_route_ab(results["route_ab"])]
    lines.append(PRODUCT_END)
    return "\n".join(lines)


def markdown_route_ab(ab: dict[str, Any]) -> list[str]:
    lines = [
        "The prediction route's class, side by side in the same run: two servers of the same exported model started "
        "by one script (`benchmarks/_serve_app.py`, `gc.freeze` as the CLI), `/predict` served by `FastJsonRoute` "
        f"(what `serve` uses) or by FastAPI's own `APIRoute`; wrk at concurrency 1 and 16 for {ab['seconds']} s on "
        f"each in turn, {ab['rounds']} rounds, medians. Throughput at concurrency 16: "
        f"**{ab['c16_throughput_ratio']:.2f}x** FastAPI's own route.",
        "",
        "| route class | c1 p50 (ms) | c1 p99 (ms) | c16 req/s | round c1 p99s (ms) | round c16 req/s |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name in ("fast_route", "standard_route"):
        r = ab[name]
        label = "`FastJsonRoute`" if name == "fast_route" else "FastAPI `APIRoute`"
        lines.append(
            f"| {label} | {r['c1_p50_ms_median']} | {r['c1_p99_ms_median']} | {r['c16_requests_per_s_median']:,} | "
            f"{', '.join(str(x['p99_ms']) for x in r['runs']['c1'])} | "
            f"{', '.join(format(x['requests_per_s'], ',.0f') for x in r['runs']['c16'])} |"
        )
    return lines


def write_doc(section: str, start: str = START, end: str = END) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    elif start == PRODUCT_START and END in text:  # right after the serving section
        head, rest = text.split(END, 1)
        text = head + END + "\n\n" + section + rest
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text, encoding="utf-8")


def print_table(results: dict[str, Any]) -> None:
    s, ours, mlflow = results["summary"], results["http"], results["mlflow"]
    rows = [
        ("in-process median / p99 (µs)", f"{s['in_process_median_us']} / {s['in_process_p99_us']}", "≤ 50"),
        ("HTTP c1: req/s, p50 / p99 (ms)", f"{ours['c1']['requests_per_s']:,.0f}, {ours['c1']['p50_ms']} / "
         f"{ours['c1']['p99_ms']}", "p99 ≤ 2"),
        ("HTTP c16: req/s, p50 / p99 (ms)", f"{ours['c16']['requests_per_s']:,.0f}, {ours['c16']['p50_ms']} / "
         f"{ours['c16']['p99_ms']}", "≥ 2,000 req/s"),
    ]  # fmt: skip
    for key, r in mlflow.items():
        if key.startswith("mlflow_c"):
            rows.append(
                (
                    f"mlflow spark c{r['concurrency']}: req/s, p50 / p99 (ms)",
                    f"{r['requests_per_s']:.2f}, {r['p50_ms']:,.0f} / {r['p99_ms']:,.0f}",
                    "",
                )
            )
    rows += [
        ("throughput ratio", f"{s['throughput_ratio']:,.0f}x", "≥ 200x"),
        ("max |ours - mlflow| (min)", f"{s['max_abs_diff_minutes']:.3g}", "≤ 1e-6"),
        ("batch predict (trips/s)", f"{s['batch_trips_per_s']:,}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, figure, target in rows:
        print(f"{name:<{width}}  {figure:>28}  {target}")


def model_detail(model: Any) -> tuple[str, str]:
    document = json.loads((Path(model.path) / "model.json").read_text(encoding="utf-8"))
    if model.kind == "linear":
        return model.kind, f"{len(model.feature_columns)} features"
    return model.kind, f"{len(document['trees'])} trees, depth ≤ {document.get('max_depth')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, help="a workspace with a trained champion (default: train one)")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per concurrency")
    parser.add_argument("--calls", type=int, default=200_000, help="in-process single-trip predictions")
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--compare", type=int, default=200, help="trips compared between the two servers")
    parser.add_argument("--mlflow-requests", type=int, default=50, help="sequential requests to the MLflow server")
    parser.add_argument("--mlflow-seconds", type=int, default=20)
    parser.add_argument("--mlflow-concurrency", type=int, default=4)
    parser.add_argument("--product-seconds", type=int, default=2, help="wrk c1 duration per variant and round")
    parser.add_argument(
        "--product-rounds",
        type=int,
        default=48,
        help="interleaved rounds of plain/shadow/log/plain: short rounds, many (the machine's drift, not the "
        "servers, made most of the difference between 10-s rounds)",
    )
    parser.add_argument(
        "--product-sets",
        type=int,
        default=3,
        help="sets of freshly started servers the rounds are split over (one process can measure a few percent "
        "off an identical one for its whole life)",
    )
    parser.add_argument("--route-rounds", type=int, default=8, help="interleaved rounds of the route A/B")
    parser.add_argument("--fuzz", type=int, default=1000, help="schemathesis examples per route (0: skip)")
    parser.add_argument(
        "--product-only",
        action="store_true",
        help="run the product section only (a repeat of its rounds); results in serve-product-<timestamp>.json, "
        "docs untouched",
    )
    parser.add_argument(
        "--pool",
        type=Path,
        nargs="+",
        help="only pool the product rounds of saved results (serve-*.json) into one sample; results in "
        "serve-pooled-<timestamp>.json",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--render", type=Path, help="only rewrite the docs section from a saved results JSON")
    args = parser.parse_args()
    if args.render is not None:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        section = markdown(saved)
        print(section)
        write_doc(section)
        if "product" in saved:
            write_doc(markdown_product(saved), PRODUCT_START, PRODUCT_END)
        return
    if args.pool is not None:
        pooled = {"date": time.strftime("%Y-%m-%d"), **pool(args.pool)}
        for name in ("shadow", "request_log", "plain_again"):
            figures = pooled[name]
            low, high = figures["p99_ratio_interval"]
            print(
                f"{name}: {figures['p99_ratio']:.3f}x the plain p99 (round by round {figures['p99_paired_ratio']:.3f}x,"
                f" 95% interval {low:.3f}x-{high:.3f}x) over {pooled['rounds']} rounds of {len(args.pool)} runs"
            )
        out = REPO / "benchmarks" / "results" / f"serve-pooled-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(pooled, indent=2) + "\n", encoding="utf-8")
        print(f"results: {out}")
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required (apt-get install wrk)")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    load_start = loads()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-", dir=os.environ.get("BENCH_TMP")))
    workspace = args.workspace.resolve() if args.workspace else tmp / "workspace"
    try:
        trained = prepare_workspace(workspace) if args.workspace is None else None
        from taxi_duration.serve.champion import load_registered, registered_version
        from taxi_duration.settings import Settings
        from taxi_duration.tracking import configure_mlflow

        configure_mlflow(Settings(workspace=workspace))
        version = registered_version(MODEL_NAME, "champion")
        if version is None:
            raise SystemExit(f"{workspace}: no champion model; train one first")
        model = load_registered(MODEL_NAME, version, dst=tmp / "champion")  # kept: model_detail and the shadow read it
        kind, detail = model_detail(model)
        rides = sample_rides()
        results: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "load_start": load_start,
            "model": {"name": model.name, "version": model.version, "kind": kind, "detail": detail},
            "trained_here": trained,
            "rides": len(rides),
            "versions": {name: metadata.version(name) for name in ("mlflow", "pyspark", "fastapi", "uvicorn")},
        }
        assert model.path is not None
        product_rounds = functools.partial(
            product,
            workspace,
            rides,
            args.product_seconds,
            args.product_rounds,
            args.product_sets,
            model.path,
            tmp,
            args.fuzz,
        )
        if args.product_only:
            results["product"] = product_rounds()
            results["load_end"] = loads()
            out = REPO / "benchmarks" / "results" / f"serve-product-{time.strftime('%Y%m%d-%H%M%S')}.json"
            out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
            print(markdown_product(results))
            print(f"results: {out}")
            return
        results["in_process"] = in_process(model, rides, args.calls)
        results["http"] = http_ours(workspace, rides, args.seconds, tmp)
        results["mlflow"] = compare_servers(
            workspace,
            model,
            model.version,
            rides,
            tmp,
            args.compare,
            args.mlflow_requests,
            args.mlflow_seconds,
            args.mlflow_concurrency,
        )
        results["batch"] = batch(workspace, rides, args.batch_rows, model, tmp)
        results["product"] = product_rounds()
        results["route_ab"] = route_ab(model.path, rides, args.seconds, args.route_rounds, tmp)
        results["load_end"] = loads()
        results["summary"] = summarize(results)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out = REPO / "benchmarks" / "results" / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print_table(results)
    section = markdown(results)
    print(section)
    print(f"results: {out}")
    product_section = markdown_product(results)
    print(product_section)
    if not args.no_doc:
        write_doc(section)
        write_doc(product_section, PRODUCT_START, PRODUCT_END)


if __name__ == "__main__":
    main()
