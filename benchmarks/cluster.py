"""The same training job in embedded `local[*]`, on a standalone cluster and through Spark Connect, side by side.

Measures start-up of a standalone cluster (master + 2 workers x 1 core) and of a Spark Connect server, then runs
`taxi-duration train` on one ingested trips table in each mode, interleaved (local, cluster, connect, local, ...)
so the three see the same machine load; reports the median wall time of each mode and its ratio to local.
Each train logs to a fresh MLflow store, so every run does the same work (no champion to compare against).

Usage: python benchmarks/cluster.py [--rows 200000] [--repeats 3] [--model gbt]
Writes benchmarks/results/cluster-<timestamp>.json and the section between the cluster markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _measure import CLI, REPO, machine, replace_doc_section, run_measured
from taxi_duration.cluster.connect import start_connect_server, stop_connect_server
from taxi_duration.cluster.daemons import free_port
from taxi_duration.cluster.standalone import start_cluster, stop_cluster

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- cluster:start -->", "<!-- cluster:end -->"
MEMORY = "2g"  # the same total for each mode: local driver heap, Connect server heap, 2 executors x 1g


def cli(workspace: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    measured = run_measured([CLI, "--workspace", str(workspace), *args, "--json"], env=env)
    if measured.returncode != 0:
        sys.stderr.write(measured.stderr[-3000:])
        raise SystemExit(f"{' '.join(args[:3])} failed (exit {measured.returncode})")
    payload = json.loads(measured.stdout.strip().splitlines()[-1])
    return {**payload, "wall_seconds": measured.seconds, "peak_rss_mb": measured.peak_rss_mb}


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=lambda v: int(float(v)), default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="gbt")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    base_env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    base_env.pop("TAXI_DURATION_REMOTE", None)
    workspace = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=os.environ.get("BENCH_TMP")))
    startups: dict[str, list[float]] = {"standalone (master + 2 workers)": [], "Spark Connect server": []}
    runs: list[dict] = []
    try:
        raw = workspace / "raw"
        cli(workspace, "generate", "--rows", str(args.rows), "--out", str(raw), env=base_env)
        ingested = cli(workspace, "ingest", str(raw), env=base_env)
        print(f"{ingested['rows_clean']:,} clean trips to train on", flush=True)

        for _ in range(args.repeats):  # start-up, measured on its own
            started = time.perf_counter()
            start_cluster(workspace, workers=2, cores=1, memory="1g", port=free_port(), webui_port=free_port())
            startups["standalone (master + 2 workers)"].append(time.perf_counter() - started)
            stop_cluster(workspace)
            started = time.perf_counter()
            start_connect_server(workspace, port=free_port(), master="local[*]", driver_memory=MEMORY)
            startups["Spark Connect server"].append(time.perf_counter() - started)
            stop_connect_server(workspace)
        print(json.dumps({k: [round(v, 1) for v in vs] for k, vs in startups.items()}), flush=True)

        cluster = start_cluster(workspace, workers=2, cores=1, memory="1g", port=free_port(), webui_port=free_port())
        connect = start_connect_server(workspace, port=free_port(), master="local[*]", driver_memory=MEMORY)
        remote = Path(str(connect.url_file)).read_text().strip()
        modes = {
            "local[*]": (["--master", "local[*]", "--driver-memory", MEMORY], base_env),
            "standalone cluster": (["--master", cluster.master_url, "--driver-memory", "1g"], base_env),
            "Spark Connect": ([], {**base_env, "TAXI_DURATION_REMOTE": remote}),
        }
        try:
            for repeat in range(args.repeats):
                for mode, (flags, env) in modes.items():
                    store = f"sqlite:///{workspace / f'mlflow-{len(runs)}.db'}"
                    before = load()
                    result = cli(workspace, *flags, "--tracking-uri", store, "train", "--model", args.model, env=env)
                    run = {
                        "mode": mode,
                        "repeat": repeat,
                        "seconds": round(result["wall_seconds"], 1),
                        "step_seconds": result["seconds"],  # fit, evaluate, log_model, ... as the job timed them
                        "client_peak_rss_mb": round(result["peak_rss_mb"]),
                        "rmsle": round(result["metrics"]["rmsle"], 5),
                        "load_before": round(before, 2),
                    }
                    print(json.dumps(run), flush=True)
                    runs.append(run)
        finally:
            stop_connect_server(workspace)
            stop_cluster(workspace)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)

    summary = summarize(startups, runs)
    out = REPO / "benchmarks" / "results" / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine(), "rows": args.rows, "trips": ingested["rows_clean"], "model": args.model}
    out.write_text(json.dumps({**document, "startups": startups, "runs": runs, "summary": summary}, indent=2) + "\n")
    section = markdown(summary, args, ingested["rows_clean"], runs)
    print(section)
    if not args.no_doc:
        replace_doc_section(DOC, START, END, section)


def summarize(startups: dict[str, list[float]], runs: list[dict]) -> dict:
    medians = {
        mode: statistics.median(r["seconds"] for r in runs if r["mode"] == mode)
        for mode in dict.fromkeys(r["mode"] for r in runs)
    }
    local = medians["local[*]"]
    return {
        "startup_median_s": {k: round(statistics.median(v), 1) for k, v in startups.items()},
        "train_median_s": {k: round(v, 1) for k, v in medians.items()},
        "ratio_to_local": {k: round(v / local, 2) for k, v in medians.items()},
    }


def markdown(summary: dict, args: argparse.Namespace, trips: int, runs: list[dict]) -> str:
    loads = [r["load_before"] for r in runs]
    lines = [
        START,
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; `python benchmarks/cluster.py --rows {args.rows} "
        f"--repeats {args.repeats} --model {args.model}` ({trips:,} clean trips; 1-minute load average before each "
        f"run {min(loads):.1f}-{max(loads):.1f}).",
        "",
        "| start-up | median (s) |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in summary["startup_median_s"].items()],
        "",
        f"| `train --model {args.model}`, whole command | median wall time (s) | ratio to local |",
        "|---|---:|---:|",
        *[
            f"| {mode} | {seconds} | {summary['ratio_to_local'][mode]} |"
            for mode, seconds in summary["train_median_s"].items()
        ],
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
