"""Where the time of ingest, train and report goes, from Spark's own event log: each command run through the real
CLI on generated trips with `spark.eventLog.enabled`, then its log read by `taxi_duration.bench.eventlog`.

    python benchmarks/spark_profile.py --rows 10000000 [--stages ingest,train,report] [--workspace WS] [--no-doc]
        [--baseline REV [--repeats N]] [--without-archive]

Per command: the process's wall time and peak memory; of the Spark application's time, how much ran inside jobs
and how much the driver worked alone (planning, Python, listing files, MLflow); the stages by kind (scan, shuffle,
write, other) with their time, executor run time, CPU, GC and bytes; the longest stages by name. Startup is the
process's time outside the application (JVM and Python start, session stop).

With `--baseline REV` each command also runs on the package as it was at git revision REV (`git archive` of `src/`
put first on PYTHONPATH), alternating baseline and current `--repeats` times: before and after side by side in one
run, on the same trips and the same machine load.

The current code runs as on a machine where `taxi-duration class-archive` has been run (it is run first, and does
nothing when the archive is there): its JVM maps the classes a run loads from that archive. `--without-archive`
also runs the current code without it (`TAXI_DURATION_CLASS_ARCHIVE=false`), alternating with the others.

Writes benchmarks/results/profile-<timestamp>.json and the section "Where the time goes" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import CLI, REPO, baseline_source, machine, replace_doc_section, run_measured
from taxi_duration.bench.eventlog import KINDS, profile_path

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- profile:start -->", "<!-- profile:end -->"
STAGES = ("ingest", "train", "report")


def commands(workspace: Path, config: Path | None) -> dict[str, list[str]]:
    base = [CLI, "--workspace", str(workspace), *(["--config", str(config)] if config else [])]
    return {
        "generate": [*base, "generate", "--rows", "{rows}", "--out", str(workspace / "raw"), "--months", "3"],
        "ingest": [*base, "ingest", str(workspace / "raw"), "--json"],
        "train": [*base, "train", "--json"],
        "report": [*base, "report", "--json"],
    }


def run_profiled(
    name: str, command: list[str], logs: Path, source: Path | None = None, env_extra: dict[str, str] | None = None
) -> dict:
    """One command with the event log on; its wall time, peak memory and the profile of its application."""
    before = set(logs.iterdir())
    conf = {"spark.eventLog.enabled": "true", "spark.eventLog.compress": "false", "spark.eventLog.dir": logs.as_uri()}
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "TAXI_DURATION_SPARK_CONF": json.dumps(conf)}
    env.update(env_extra or {})
    if source is not None:
        env["PYTHONPATH"] = str(source)
    measured = run_measured(command, env=env)
    if measured.returncode != 0:
        sys.stderr.write(measured.stderr[-3000:])
        raise SystemExit(f"{name} failed (exit {measured.returncode})")
    (log,) = set(logs.iterdir()) - before
    found = profile_path(log).to_dict()
    found.pop("app_name")
    return {
        "stage": name,
        "event_log": str(log),
        "seconds": round(measured.seconds, 1),
        "peak_rss_mb": round(measured.peak_rss_mb),
        "startup_s": round(measured.seconds - found["wall_s"], 1),
        **found,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| command | code | wall s | startup s | driver alone s | in jobs s | jobs | stages | "
        + " | ".join(f"{kind} s (run s)" for kind in KINDS)
        + " | GC s | rows read (M) | shuffle MB | written MB |",
        "|---|---|" + "---:|" * (6 + len(KINDS) + 4),
    ]
    for r in results:
        kinds = r["by_kind"]
        cells = [f"{kinds[k]['stage_s']:.1f} ({kinds[k]['run_s']:.1f})" for k in KINDS]
        gc, read, shuffled, written = (
            sum(kinds[k][m] for k in KINDS) for m in ("gc_s", "rows_read_m", "shuffle_read_mb", "output_mb")
        )
        lines.append(
            f"| {r['stage']} | {r.get('code', 'current')} | {r['seconds']:.1f} | {r['startup_s']:.1f} | "
            f"{r['driver_only_s']:.1f} | "
            f"{r['in_jobs_s']:.1f} | {r['jobs']} | {r['stages']} | "
            + " | ".join(cells)
            + f" | {gc:.1f} | {read:,.1f} | {shuffled:,.0f} | {written:,.0f} |"
        )
    return "\n".join(lines)


def longest(results: list[dict], per_command: int = 4) -> str:
    lines = [
        "| command | stage | kind | tasks | s | run s | rows read (M) | shuffle MB | written MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for s in r["longest_stages"][:per_command]:
            lines.append(
                f"| {r['stage']} | {s['stage_id']}: `{s['name'][:60]}` | {s['kind']} | {s['tasks']} | "
                f"{s['seconds']:.1f} | {s['run_s']:.1f} | {s['rows_read_m']:,.2f} | {s['shuffle_mb']:,.0f} | "
                f"{s['output_mb']:,.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=float, default=10_000_000)
    parser.add_argument("--stages", default=",".join(STAGES), help="of ingest, train, report (in this order)")
    parser.add_argument("--workspace", type=Path, help="reuse (and keep) this workspace; generated trips are kept")
    parser.add_argument("--config", type=Path, help="pipeline config for every command")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--render", type=Path, help="only print a saved result and write it into the docs")
    parser.add_argument("--baseline", help="also run each command on the package at this git revision")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command (and of the baseline)")
    parser.add_argument(
        "--without-archive",
        action="store_true",
        help="also run the current code without the JVM class archive (`taxi-duration class-archive`, built first)",
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        print(table(saved["results"]))
        print(longest(saved["results"]))
        if not args.no_doc:
            write_doc(saved, args.render.name)
        return
    rows = int(args.rows)
    wanted = [s for s in STAGES if s in args.stages.split(",")]
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix=f"profile-{rows}-", dir=os.environ.get("BENCH_TMP")))
    workspace.mkdir(parents=True, exist_ok=True)
    logs = workspace / "eventlog"
    logs.mkdir(exist_ok=True)
    planned = commands(workspace, args.config)
    if not (workspace / "raw").exists():
        generate = [part.format(rows=rows) for part in planned["generate"]]
        started = time.perf_counter()
        if run_measured(generate, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}).returncode != 0:
            raise SystemExit("generate failed")
        print(f"generated {rows:,} trips in {time.perf_counter() - started:.0f} s", flush=True)
    # the current code runs as a user's would after `taxi-duration class-archive` (once per machine): built first
    built = run_measured([CLI, "class-archive", "--json"], env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    if built.returncode != 0:
        sys.stderr.write(built.stderr[-3000:])
        raise SystemExit("class-archive failed")
    archive = json.loads(built.stdout.strip().splitlines()[-1])
    print(f"class archive {archive['path']} ({archive['bytes'] / 1e6:.0f} MB)", flush=True)
    versions: list[tuple[str, Path | None, dict[str, str]]] = [("current", None, {})]
    if args.without_archive:
        versions.insert(0, ("current, no class archive", None, {"TAXI_DURATION_CLASS_ARCHIVE": "false"}))
    if args.baseline:
        versions.insert(0, (f"baseline {args.baseline}", baseline_source(args.baseline, workspace), {}))
    results = []
    for name in wanted:
        for _ in range(args.repeats):
            for code, source, env_extra in versions:
                result = run_profiled(name, planned[name], logs, source, env_extra)
                results.append({"rows": rows, "code": code, **result})
                print(
                    f"{name} ({code}): {result['seconds']} s, driver alone {result['driver_only_s']} s, "
                    f"in jobs {result['in_jobs_s']} s",
                    flush=True,
                )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = REPO / "benchmarks" / "results" / f"profile-{stamp}.json"
    payload = {
        "machine": machine(),
        "rows": rows,
        "config": str(args.config or ""),
        "baseline": args.baseline or "",
        "class_archive": archive,
        "head": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(longest(results))
    print(ratios(results))
    print(f"saved {out}")
    if not args.no_doc:
        write_doc(payload, out.name)


def ratios(results: list[dict]) -> str:
    """Median wall seconds per command and code version, each against the baseline's."""
    lines = ["| command | code | baseline median s | median s | against baseline |", "|---|---|---:|---:|---:|"]
    for name in dict.fromkeys(r["stage"] for r in results):
        runs = [r for r in results if r["stage"] == name]
        base = [r["seconds"] for r in runs if r.get("code", "current").startswith("baseline")]
        for code in dict.fromkeys(r.get("code", "current") for r in runs):
            cur = [r["seconds"] for r in runs if r.get("code", "current") == code]
            if base and not code.startswith("baseline"):
                b, c = statistics.median(base), statistics.median(cur)
                lines.append(f"| {name} | {code} | {b:.1f} | {c:.1f} | {c / b:.2f}x |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_doc(payload: dict, name: str) -> None:
    results = payload["results"]
    # the longest stages of each command's last run of the current code
    current = list({r["stage"]: r for r in results if r.get("code", "current") == "current"}.values())
    compared = ratios(results)
    base = payload.get("baseline")
    section = (
        f"{START}\n{payload['rows']:,} generated trips (3 months), {payload['machine']}, `{name}`"
        + (f" (current: {payload.get('head', '')}, baseline: {base}, alternating)" if base else "")
        + f":\n\n{table(results)}\n\n"
        + (f"Before and after, medians of the runs above:\n\n{compared}\n\n" if compared else "")
        + f"The longest stages (current code):\n\n{longest(current)}\n{END}"
    )
    replace_doc_section(DOC, START, END, section)


if __name__ == "__main__":
    main()
