"""Time generate / ingest / train / score at growing sizes through the real CLI; print and save the results.

Each stage is one `taxi-duration` process (JVM start included), measured for wall time and peak resident memory
of the whole process tree. Usage: python benchmarks/pipeline.py --rows 1000000,10000000 [--model gbt]
Writes benchmarks/results/pipeline-<timestamp>.json and the table in docs/benchmarks.md (section "Pipeline").

To time later stages again on data already ingested (e.g. `train` after a change, or with another `--config`):
    python benchmarks/pipeline.py --rows 1e7 --workspace WS --stages train --config FILE --no-doc
where WS holds the lakehouse of a kept run (`--keep`) and a fresh MLflow store (delete mlflow.db and mlartifacts,
so no champion is re-scored); the workspace is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _measure import CLI, REPO, machine, replace_doc_section, run_measured

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- pipeline:start -->", "<!-- pipeline:end -->"


def stages(workspace: Path, rows: int, model: str, config: Path | None = None) -> list[tuple[str, list[str]]]:
    base = [CLI, "--workspace", str(workspace), *(["--config", str(config)] if config else [])]
    raw = workspace / "raw"
    return [
        (
            "generate",
            [*base, "generate", "--rows", str(rows), "--out", str(raw), "--start", "2024-01", "--months", "3"],
        ),
        ("ingest", [*base, "ingest", str(raw), "--json"]),
        ("train", [*base, "train", "--model", model, "--json"]),
        ("score", [*base, "score", "--json"]),
    ]


def run_size(
    rows: int,
    model: str,
    keep: bool,
    workspace: Path | None = None,
    only: set[str] | None = None,
    config: Path | None = None,
) -> list[dict]:
    if workspace is not None:
        keep = True
    else:
        workspace = Path(tempfile.mkdtemp(prefix=f"bench-{rows}-", dir=os.environ.get("BENCH_TMP")))
    results = []
    try:
        for name, command in stages(workspace, rows, model, config):
            if only is not None and name not in only:
                continue
            measured = run_measured(command, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
            if measured.returncode != 0:
                sys.stderr.write(measured.stderr[-3000:])
                raise SystemExit(f"{name} at {rows:,} rows failed (exit {measured.returncode})")
            last = measured.stdout.strip().splitlines()[-1] if measured.stdout.strip() else "{}"
            payload = json.loads(last) if last.startswith("{") else {}
            result = {
                "rows": rows,
                "stage": name,
                "seconds": round(measured.seconds, 1),
                "rows_per_s": round(rows / measured.seconds),
                "peak_rss_mb": round(measured.peak_rss_mb),
                "peak_by_process_mb": measured.peak_by_process,
                "load_1min_end": round(measured.load_1min, 2),
            }
            if name == "ingest":
                result["rows_in"] = payload.get("rows_in")
                result["rows_clean"] = payload.get("rows_clean")
            if name == "train":
                result["rmsle"] = round(payload["metrics"]["rmsle"], 4)
                result["baseline_rmsle"] = round(payload["baseline_metrics"]["rmsle"], 4)
                result["phases_s"] = payload.get("seconds")
                result["fit_fraction"] = payload.get("data", {}).get("fit_fraction")
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        if not keep:
            shutil.rmtree(workspace, ignore_errors=True)
    return results


def markdown(results: list[dict], model: str, when: str) -> str:
    lines = [
        START,
        f"Measured {when} on {machine()}; driver memory 4g (default), `local[*]`, model `{model}`.",
        "Each stage is one CLI process: JVM start-up (about 5-8 s) is included.",
        "",
        "| trips | stage | wall time (s) | trips/s | peak RSS of process tree (MB) | notes |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        notes = ""
        if r["stage"] == "ingest":
            notes = f"{r.get('rows_in') or 0:,} rows in (incl. injected duplicates), {r.get('rows_clean') or 0:,} clean"
        if r["stage"] == "train":
            notes = f"validation RMSLE {r['rmsle']} (zone-pair median baseline {r['baseline_rmsle']})"
        extra = []
        if r.get("peak_by_process_mb"):
            held = ", ".join(f"{kind} {mb:,.0f}" for kind, mb in r["peak_by_process_mb"].items() if mb >= 50)
            extra.append(f"at the peak: {held} MB")
        if r.get("load_1min_end") is not None:
            extra.append(f"load {r['load_1min_end']} at the end")
        notes = "; ".join([notes, *extra] if notes else extra)
        lines.append(
            f"| {r['rows']:,} | {r['stage']} | {r['seconds']} | {r['rows_per_s']:,} | {r['peak_rss_mb']:,} | {notes} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated sizes, e.g. 1e6,1e7")
    parser.add_argument("--model", default="gbt")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--workspace", type=Path, help="run in this workspace (kept) instead of a new one")
    parser.add_argument("--stages", help="comma-separated stages to run (default: generate,ingest,train,score)")
    parser.add_argument("--config", type=Path, help="a pipeline config passed to every stage (--config)")
    args = parser.parse_args()
    sizes = [int(float(size)) for size in args.rows.split(",")]
    if args.workspace is not None and len(sizes) != 1:
        raise SystemExit("--workspace: give one size (--rows) for the data it holds")
    only = set(args.stages.split(",")) if args.stages else None
    when = time.strftime("%Y-%m-%d")
    results = [r for rows in sizes for r in run_size(rows, args.model, args.keep, args.workspace, only, args.config)]
    out = REPO / "benchmarks" / "results" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = args.config.read_text(encoding="utf-8") if args.config else None
    payload = {"machine": machine(), "model": args.model, "config": config, "results": results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    section = markdown(results, args.model, when)
    print(section)
    if not args.no_doc:
        replace_doc_section(DOC, START, END, section)


if __name__ == "__main__":
    main()
