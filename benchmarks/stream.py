"""Streaming throughput and latency: replay trips into a running `taxi-duration stream` at fixed rates.

For each rate a fresh stream (its own workspace and checkpoint, the same registered champion) is started, warmed
up with one small file, then fed by `taxi-duration replay` for `--seconds` seconds. Latency of a trip = the commit
time of the micro-batch that wrote it (`stream/commits/N.json`, taken after its predictions folder was renamed into
place) minus the time its file landed (the file's modification time, recorded per prediction as `landed_at`; replay
renames each finished file into place). The stream keeps up at a rate when every landed file was committed and the
latency of the last quarter of files is no more than 1.5x that of the first quarter + 1 s (no growing backlog).

Usage: python benchmarks/stream.py [--rates 1000,5000,20000] [--seconds 30] [--model gbt] [--trigger 1s]
Writes benchmarks/results/stream-<timestamp>.json and the section of docs/benchmarks.md between the stream markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from _measure import CLI, REPO, machine, replace_doc_section

DOC = REPO / "docs" / "benchmarks.md"
SAMPLE = REPO / "src" / "taxi_duration" / "data" / "taxis_sample_2019-03.csv"
START, END = "<!-- stream:start -->", "<!-- stream:end -->"
KEEP_UP_RATIO = 1.1  # batch cycle / data span, median over the steady batches
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def cli(workspace: Path, tracking: str | None, *args: str) -> dict:
    """Run one CLI command. The model is trained with the workspace's own store (artifacts under it); the streams
    point at that store with --tracking-uri."""
    store = ["--tracking-uri", tracking] if tracking else []
    command = [CLI, "--workspace", str(workspace), *store, *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class LoadSampler:
    """The 1-minute load average every second while a measurement runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(1.0)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def commits(root: Path) -> dict[int, dict]:
    found = {}
    for path in (root / "commits").glob("*.json"):
        record = json.loads(path.read_text())
        found[record["batch_id"]] = record
    return found


def landed_files(landing: Path) -> list[Path]:
    return [p for p in landing.iterdir() if not p.name.startswith(".")]


def wait_for(condition, timeout: float, poll: float = 0.25) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def replay_into(
    workspace: Path, tracking: str, raw: Path, rate: int, seconds: float, fps: float, landing: Path
) -> dict:
    return cli(
        workspace,
        tracking,
        "replay",
        "--from",
        str(raw),
        "--rate",
        str(rate),
        "--files-per-second",
        str(fps),
        "--limit",
        str(int(rate * seconds)),
        "--landing",
        str(landing),
    )


def drained(root: Path, landing: Path) -> bool:
    return sum(c["files"] for c in commits(root).values()) >= len(landed_files(landing))


def run_rate(
    base: Path,
    tracking: str,
    raws: tuple[Path, Path],
    rate: int,
    seconds: float,
    trigger: str,
    fps: float,
    warmup_seconds: float,
    windows_trigger: str,
) -> dict:
    workspace = base / f"rate-{rate}"
    root, landing = workspace / "stream", workspace / "stream" / "landing"
    landing.mkdir(parents=True)
    log = (workspace / "stream.log").open("w")
    command = [CLI, "--workspace", str(workspace), "--tracking-uri", tracking, "stream", "--trigger", trigger]
    command += ["--windows-trigger", windows_trigger]
    stream = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    started = time.time()
    raw, warmup_raw = raws
    result: dict = {
        "rate": rate,
        "files_per_second": fps,
        "trigger": trigger,
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
    }
    try:
        # warm-up: one small file, so JVM start, model load and first-query planning are not in the figures
        cli(
            workspace,
            tracking,
            "replay",
            "--from",
            str(SAMPLE),
            "--rate",
            "100000",
            "--limit",
            "200",
            "--files-per-second",
            "1000",
            "--landing",
            str(landing),
        )
        if not wait_for(lambda: 0 in commits(root), timeout=900):
            raise SystemExit(f"stream did not commit its warm-up batch; see {workspace / 'stream.log'}")
        result["startup_seconds"] = round(time.time() - started, 1)
        first = {p.name for p in landed_files(landing)}
        if warmup_seconds > 0:
            # the JVM compiles the hot paths over the first few micro-batches (batches take ~2x as long at
            # first): feed the rate for a while, earlier in event time, and report those files apart
            replay_into(workspace, tracking, warmup_raw, rate, warmup_seconds, fps, landing)
            wait_for(lambda: drained(root, landing), timeout=300)
        warmup = {p.name for p in landed_files(landing)}
        result["warmup_files"] = sorted(warmup - first)
        with LoadSampler() as load:
            replayed = replay_into(workspace, tracking, raw, rate, seconds, fps, landing)
            result["all_committed"] = wait_for(lambda: drained(root, landing), timeout=120)
        result["replay"] = replayed
        result["load_avg_1min"] = {
            "min": min(load.samples),
            "median": float(np.median(load.samples)),
            "max": max(load.samples),
        }
    finally:
        stream.send_signal(signal.SIGTERM)  # the driver stops its queries; the JVM goes with it
        try:
            stream.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stream.pid, signal.SIGKILL)
            stream.wait()
        log.close()

    measured = {p.name for p in landed_files(landing)} - warmup
    result.update(figures(root, measured, fps))
    if result["warmup_files"]:
        cold = figures(root, set(result["warmup_files"]), fps)
        result["warmup"] = {k: cold[k] for k in ("latency_p50_s", "latency_p99_s", "batch_seconds_median", "batches")}
    result["keeps_up"] = bool(result["all_committed"] and result["cycle_over_span_median"] <= KEEP_UP_RATIO)
    return result


def figures(root: Path, include: set[str], fps: float) -> dict:
    """Latency and throughput of the files named in `include`, from what the stream wrote: predictions
    (landed_at, batch_id) and commit records."""
    batches = commits(root)
    table = pads.dataset(root / "predictions", format="parquet", partitioning="hive").to_table(
        columns=["source_file", "landed_at", "batch_id"]
    )
    files = np.array([Path(p).name for p in table.column("source_file").to_pylist()])
    mine = np.isin(files, list(include))
    # Spark writes INT96 timestamps: UTC instants that pyarrow reads as naive nanoseconds
    micros = table.column("landed_at").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    landed = micros[mine] / 1e6
    batch_ids = table.column("batch_id").to_numpy()[mine]
    committed = np.array([batches[int(b)]["committed_at"] for b in batch_ids])
    latency = committed - landed
    per_file: dict[str, float] = {}
    for name, value in zip(files[mine], latency, strict=True):
        per_file[name] = float(value)
    ordered = [per_file[name] for name in sorted(per_file)]
    quarter = max(1, len(ordered) // 4)
    first_q, last_q = float(np.median(ordered[:quarter])), float(np.median(ordered[-quarter:]))
    measured = {int(b) for b in set(batch_ids.tolist())}
    durations = [batches[i]["committed_at"] - batches[i]["started_at"] for i in sorted(measured)]
    trips = int(mine.sum())
    # A micro-batch takes what landed while the previous one ran. The stream keeps up when a batch needs no more
    # time (commit to commit) than the span of data it holds (its files / files per second); when it needs more,
    # each batch is bigger than the last and the backlog grows. First and last batches are start and drain.
    order = sorted(measured)
    cycles = {i: batches[i]["committed_at"] - batches[i - 1]["committed_at"] for i in order if i - 1 in batches}
    steady = order[1:-1] or order
    ratios = [cycles[i] / (batches[i]["files"] / fps) for i in steady if i in cycles and batches[i]["files"]]
    phases: dict[str, list[float]] = {}
    for i in order:
        for name, value in batches[i].get("seconds", {}).items():
            phases.setdefault(name, []).append(value)
    return {
        "phase_seconds_median": {name: round(float(np.median(v)), 2) for name, v in phases.items()},
        "cycle_over_span_median": round(float(np.median(ratios)), 2),
        "batch_points": [
            [batches[i]["trips"] + batches[i]["quarantined"], round(durations[k], 2)] for k, i in enumerate(order)
        ],
        "trips_scored": trips,
        "files": len(per_file),
        "batches": len(measured),
        "latency_p50_s": round(float(np.percentile(latency, 50)), 2),
        "latency_p99_s": round(float(np.percentile(latency, 99)), 2),
        "latency_max_s": round(float(latency.max()), 2),
        "latency_first_quarter_median_s": round(first_q, 2),
        "latency_last_quarter_median_s": round(last_q, 2),
        "achieved_trips_per_s": round(trips / (committed.max() - landed.min())),
        "batch_seconds_median": round(float(np.median(durations)), 2),
        "batch_seconds_max": round(float(max(durations)), 2),
        "trips_per_batch_median": int(np.median([batches[i]["trips"] for i in sorted(measured)])),
    }


def render(results: dict) -> str:
    rates = results["rates"]
    lines = [
        START,
        "## Streaming (`taxi-duration stream`)",
        "",
        f"Measured {results['date']} on {results['machine']}; `python benchmarks/stream.py --rates "
        f"{','.join(str(r['rate']) for r in rates)} --seconds {results['seconds']:g} --trigger "
        f"{results['trigger']}`. Model: {results['model']}. Trips: synthetic TLC yellow trips (`generate`) replayed "
        f"in event-time order as CSV files, {rates[0]['files_per_second']:g} files a second, for "
        f"{results['seconds']:g} s per rate into a fresh stream (own checkpoint; `local[*]`, one process: the score "
        "query and the borough x window query, refreshed every "
        f"{results.get('windows_trigger', '1s')}, share the two cores). Before the measured replay each stream "
        f"is warmed up: one small file, then {rates[0].get('warmup_seconds', 0):g} s of trips at the same rate "
        "(earlier event times), drained before measuring; the warm-up column gives the latency of those trips, "
        "which include the JVM's first compilations. The machine is shared with other developers' Spark jobs: "
        f"load average (1/5/15 min) {results['load_before']} before the run, and per rate the 1-minute load "
        "average (min/median/max) during the replay.",
        "",
        "| offered trips/s | trips | files | batches | keeps up | batch cycle / data span | latency p50 (s) "
        "| p99 (s) | max (s) | batch time median/max (s) | trips per batch (median) | warm-up p50 / p99 (s) "
        "| load avg (1 min) |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rates:
        load = r["load_avg_1min"]
        warm = r.get("warmup")
        lines.append(
            f"| {r['rate']:,} | {r['trips_scored']:,} | {r['files']} | {r['batches']} | "
            f"{'yes' if r['keeps_up'] else 'no'} | {r['cycle_over_span_median']} | {r['latency_p50_s']} | "
            f"{r['latency_p99_s']} | {r['latency_max_s']} | {r['batch_seconds_median']} / {r['batch_seconds_max']} | "
            f"{r['trips_per_batch_median']:,} | "
            + (f"{warm['latency_p50_s']} / {warm['latency_p99_s']}" if warm else "")
            + f" | {load['min']:.1f} / {load['median']:.1f} / {load['max']:.1f} |"
        )
    phase_names = list(rates[-1].get("phase_seconds_median", {}))
    if phase_names:
        lines += [
            "",
            "Where a micro-batch's time goes (median seconds per batch, from `commits/N.json`):",
            "",
            "| offered trips/s | " + " | ".join(phase_names) + " |",
            "|---:|" + "---:|" * len(phase_names),
        ]
        for r in rates:
            phases = r.get("phase_seconds_median", {})
            lines.append(f"| {r['rate']:,} | " + " | ".join(str(phases.get(n, "")) for n in phase_names) + " |")
    fit = results.get("batch_time_fit")
    if fit:
        lines += [
            "",
            f"A straight line through every measured batch (trips in, seconds): **{fit['fixed_seconds']} s fixed "
            f"+ {fit['microseconds_per_trip']} µs per trip**, so under this load the stream cannot keep up beyond "
            f"about **{fit['capacity_trips_per_s']:,} trips/s** however large the batches get, and at a rate r the "
            "batches settle at fixed / (1 - r x per-trip) seconds.",
        ]
    lines += [
        "",
        "How it is measured: latency of a trip = commit time of the micro-batch that wrote it (taken right after its "
        "`predictions/batch_id=N` folder was renamed into place, `commits/N.json`) minus the time its file landed "
        "(the file's modification time, recorded per prediction as `landed_at`; replay renames each finished file "
        "into place). A micro-batch takes what landed while the previous one ran, so the stream keeps up when a "
        "batch needs no more time, commit to commit, than the span of data it holds (its files / files per "
        f"second); `keeps up` = the median of that ratio over the steady batches (not the first and last) is at "
        f"most {KEEP_UP_RATIO}. Raw results: `benchmarks/results/stream-*.json`.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,5000,20000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="gbt")
    parser.add_argument("--trigger", default="1s")
    parser.add_argument("--windows-trigger", default="10s")
    parser.add_argument("--files-per-second", type=float, default=2.0)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=20.0,
        help="Replay this long at each rate before measuring (earlier event times; reported apart).",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary workspaces.")
    parser.add_argument("--no-doc", action="store_true", help="Do not rewrite docs/benchmarks.md.")
    parser.add_argument(
        "--recompute",
        type=Path,
        help="Recompute the figures from the kept workspaces of a run (BASE) and its results JSON (--log).",
    )
    parser.add_argument("--log", type=Path, help="The results JSON of the run to recompute.")
    parser.add_argument("--render", type=Path, help="Only write docs/benchmarks.md from this results JSON.")
    args = parser.parse_args()
    if args.render:
        replace_doc_section(DOC, START, END, render(json.loads(args.render.read_text())))
        return
    if args.recompute:
        recompute(args)
        return
    rates = [int(r) for r in args.rates.split(",")]
    base = Path(tempfile.mkdtemp(prefix="bench-stream-", dir=os.environ.get("BENCH_TMP")))
    model_ws = base / "model"
    tracking = f"sqlite:///{model_ws.resolve() / 'mlflow.db'}"
    load_before = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    try:
        cli(model_ws, None, "ingest", str(SAMPLE))
        trained = cli(model_ws, None, "train", "--model", args.model)
        rows = int(max(rates) * args.seconds)
        cli(model_ws, None, "generate", "--rows", str(rows), "--out", str(base / "raw"), "--start", "2024-01")
        raw = base / "raw" / "yellow_tripdata_2024-01"
        warmup_rows = int(max(rates) * args.warmup_seconds)
        if warmup_rows:
            cli(
                model_ws,
                None,
                "generate",
                "--rows",
                str(warmup_rows),
                "--out",
                str(base / "warmup"),
                "--start",
                "2023-12",
            )
        raws = (raw, base / "warmup" / "yellow_tripdata_2023-12")
        measured = []
        for rate in rates:
            result = run_rate(
                base,
                tracking,
                raws,
                rate,
                args.seconds,
                args.trigger,
                args.files_per_second,
                args.warmup_seconds,
                args.windows_trigger,
            )
            print(json.dumps(result), flush=True)
            measured.append(result)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    save(
        {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "load_before": load_before,
            "model": f"taxi-duration v{trained['model_version']} ({args.model}, trained on the real TLC sample)",
            "seconds": args.seconds,
            "trigger": args.trigger,
            "windows_trigger": args.windows_trigger,
            "rates": measured,
        },
        write_doc=not args.no_doc,
    )


def recompute(args: argparse.Namespace) -> None:
    """Figures again from a kept run: its workspaces (BASE) and its results JSON (--log)."""
    results = json.loads(args.log.read_text())
    for result in results["rates"]:
        root = args.recompute / f"rate-{result['rate']}" / "stream"
        landed = {p.name for p in landed_files(root / "landing")}
        measured = landed - _warmup_files(root) - set(result.get("warmup_files", []))
        result.update(figures(root, measured, result["files_per_second"]))
        result["keeps_up"] = bool(result["all_committed"] and result["cycle_over_span_median"] <= KEEP_UP_RATIO)
        print(json.dumps(result), flush=True)
    save(results, write_doc=not args.no_doc)


def _warmup_files(root: Path) -> set[str]:
    """The warm-up files: those of batch 0, committed before the replay started."""
    table = pads.dataset(root / "predictions" / "batch_id=0", format="parquet").to_table(columns=["source_file"])
    return {Path(p).name for p in table.column("source_file").to_pylist()}


def save(results: dict, write_doc: bool) -> None:
    points = np.array([p for r in results["rates"] for p in r["batch_points"]], dtype=float)
    if len(points) >= 3:
        # batch time = fixed cost + trips x marginal cost: the stream cannot keep up beyond 1 / marginal cost
        slope, intercept = np.polyfit(points[:, 0], points[:, 1], 1)
        results["batch_time_fit"] = {
            "fixed_seconds": round(float(intercept), 2),
            "microseconds_per_trip": round(float(slope) * 1e6, 1),
            "capacity_trips_per_s": round(1.0 / float(slope)) if slope > 0 else None,
        }
    out = REPO / "benchmarks" / "results" / f"stream-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    section = render(results)
    print(section)
    if write_doc:
        replace_doc_section(DOC, START, END, section)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
