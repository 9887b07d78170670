"""`taxi-duration monitor` on N current trips against N reference trips: wall time and peak RSS of the process
tree, at growing N, through the real CLI (JVM start included).

Setup per size (reused across runs under --data, as other benchmarks reuse generated data): `generate` 2N
synthetic trips over two months (2024-01 the reference, 2024-02 the current window), `ingest` them, `train` a
champion on a 2% sample. Only the `monitor` call is measured. Usage:
    python benchmarks/monitor.py --rows 1e6,1e7 [--data DIR] [--stored]
With --stored, `score` writes the champion's predictions for every trip first (timed apart), as a daily scoring job
would, so `monitor` reuses them instead of scoring both windows itself. With --all-trips, `monitor` reads every trip
(`monitor.max_trips: null`) instead of its default sample of 500,000 trips per period (the counts are exact either
way).
Writes benchmarks/results/monitor-<timestamp>.json and the section "Monitor" (with --stored: "Monitor with stored
predictions") of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _measure import CLI, REPO, machine, replace_doc_section, run_measured

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- monitor:start -->", "<!-- monitor:end -->"
STORED_START, STORED_END = "<!-- monitor-stored:start -->", "<!-- monitor-stored:end -->"
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def prepare(workspace: Path, rows: int) -> None:
    """Generate, ingest and train once per workspace (a marker file says it is done)."""
    done = workspace / ".prepared"
    if done.exists():
        return
    base = [CLI, "--workspace", str(workspace)]
    raw = workspace / "raw"
    steps = [
        [*base, "generate", "--rows", str(2 * rows), "--out", str(raw), "--start", "2024-01", "--months", "2"],
        [*base, "ingest", str(raw)],
        [*base, "train", "--sample-fraction", "0.02"],
    ]
    for step in steps:
        print("setup:", " ".join(step[3:]), flush=True)
        subprocess.run(step, check=True, env=ENV, stdout=subprocess.DEVNULL)
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


def score(workspace: Path) -> dict:
    """`score` the whole trips table with the champion (predictions for both windows), timed."""
    measured = run_measured([CLI, "--workspace", str(workspace), "score", "--json"], env=ENV)
    if measured.returncode != 0:
        sys.stderr.write(measured.stderr[-3000:])
        raise SystemExit(f"score in {workspace} failed (exit {measured.returncode})")
    payload = json.loads(measured.stdout.strip().splitlines()[-1])
    return {"score_seconds": round(measured.seconds, 1), "scored_rows": payload.get("rows")}


def measure(workspace: Path, rows: int, all_trips: bool = False) -> dict:
    command = [CLI, "--workspace", str(workspace)]
    if all_trips:
        config = workspace / "all-trips.yaml"
        config.write_text("monitor:\n  max_trips: null\n", encoding="utf-8")
        command += ["--config", str(config)]
    command += ["monitor", "--from", "2024-02-01", "--to", "2024-03-01"]
    command += ["--reference-from", "2024-01-01", "--reference-to", "2024-02-01", "--window", "week", "--json"]
    measured = run_measured(command, env=ENV)
    if measured.returncode != 0:
        sys.stderr.write(measured.stderr[-3000:])
        raise SystemExit(f"monitor at {rows:,} rows failed (exit {measured.returncode})")
    payload = json.loads(measured.stdout.strip().splitlines()[-1])
    result = {
        "rows": rows,
        "rows_current": payload["rows_current"],
        "rows_reference": payload["rows_reference"],
        "seconds": round(measured.seconds, 1),
        "peak_rss_mb": round(measured.peak_rss_mb),
        "alert": payload["alert"],
        "prediction_psi": payload["prediction_psi"],
        "realized_rmsle": payload["realized"]["rmsle"],
        "sampled": payload.get("sampled"),
        "phases": payload["seconds"],
        "predictions_reused": payload.get("predictions_reused"),
        "predictions_scored": payload.get("predictions_scored"),
        "load_1min_end": round(measured.load_1min, 2),
    }
    print(json.dumps(result), flush=True)
    return result


def markdown(results: list[dict], when: str, load: str, stored: bool) -> str:
    lines = [
        STORED_START if stored else START,
        f"Measured {when} on {machine()}; driver memory 4g (default), `local[*]`; {load}.",
        "One `monitor` CLI process per size (JVM start-up included): N current trips (2024-02) against N reference",
        "trips (2024-01) of synthetic data, GBT champion trained on a 2% sample; phases from the command's `--json`.",
        "Statistics on: `all` when every trip was read, else the share of each period (current / reference) in the",
        "sample chosen by trip id beyond `monitor.max_trips` (500,000 by default); the trip counts are exact.",
    ]
    if stored:
        lines.append(
            "Before it, `score` wrote the champion's predictions for all 2N trips (its own process, timed apart), so "
            "`monitor` reuses them: the production shape, where a scoring job runs before monitoring."
        )
    lines += [
        "",
        "| N (current = reference) | current trips | reference trips | statistics on | wall time (s) "
        "| peak RSS of process tree (MB) | realised RMSLE | phases (s) |",
        "|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        phases = ", ".join(f"{k} {v}" for k, v in r["phases"].items())
        if stored:
            phases = f"{phases} (`score` of {r['scored_rows'] or 0:,} trips before: {r['score_seconds']} s)"
        if r.get("predictions_reused") is not None:
            phases += f"; predictions reused {r['predictions_reused']:,}, scored {r['predictions_scored']:,}"
        lines.append(
            f"| {r['rows']:,} | {r['rows_current']:,} | {r['rows_reference']:,} | {_sampled(r.get('sampled'))} "
            f"| {r['seconds']} | {r['peak_rss_mb']:,} | {_number(r.get('realized_rmsle'))} | {phases} |"
        )
    lines.append(STORED_END if stored else END)
    return "\n".join(lines)


def _sampled(sampled: dict | None) -> str:
    if not sampled or all(share >= 1.0 for share in sampled.values()):
        return "all"
    return " / ".join(f"{sampled.get(period, 1.0):.1%}" for period in ("current", "reference"))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated N, e.g. 1e6,1e7")
    parser.add_argument("--data", type=Path, default=REPO / "workspace" / "bench" / "monitor")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--stored", action="store_true", help="run `score` first: monitor reuses the predictions")
    parser.add_argument("--all-trips", action="store_true", help="monitor.max_trips: null (no sample), run after")
    args = parser.parse_args()
    sizes = [int(float(size)) for size in args.rows.split(",")]
    results = []
    for rows in sizes:
        workspace = args.data / f"n{rows}"
        prepare(workspace, rows)
        scored = score(workspace) if args.stored else {}
        load_before = os.getloadavg()[0]
        results.append({**measure(workspace, rows), **scored, "stored_predictions": args.stored})
        results[-1]["load_average_before"] = round(load_before, 1)
        if args.all_trips:
            load_before = os.getloadavg()[0]
            results.append({**measure(workspace, rows, all_trips=True), **scored, "stored_predictions": args.stored})
            results[-1]["load_average_before"] = round(load_before, 1)
    loads = ", ".join(f"{r['load_average_before']}" for r in results)
    load = f"1-minute load average before each run: {loads} (2 cores shared with other work)"
    name = "monitor-stored" if args.stored else "monitor"
    out = REPO / "benchmarks" / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    section = markdown(results, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load, args.stored)
    print(section)
    if not args.no_doc:
        replace_doc_section(DOC, *((STORED_START, STORED_END) if args.stored else (START, END)), section)


if __name__ == "__main__":
    main()
