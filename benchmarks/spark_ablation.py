"""Naive vs tuned Spark, one habit at a time: the lecture-style workload (`spark-naive`) with its habits undone
cumulatively, then the project's pipeline (`spark`), on the same generated trips; results checked equal.

    python benchmarks/spark_ablation.py --rows 1e6 [--data-dir DIR]

Writes benchmarks/results/spark-ablation-<timestamp>.json and the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _measure import REPO, machine, replace_doc_section, run_measured
from taxi_duration.bench.compare import data_paths, ensure_data, mismatches

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- compare-ablation:start -->", "<!-- compare-ablation:end -->"
# each step keeps the fixes before it
STEPS = (
    ("lecture style: CSV + inferSchema, string times, Python UDF, count() per step, 200 partitions, no AQE", ""),
    ("+ schema on read (no inference pass)", "schema"),
    ("+ timestamps typed on read (no string round trip)", "schema,typed_times"),
    ("+ built-in haversine instead of the Python UDF", "schema,typed_times,builtin"),
    ("+ no intermediate count() actions", "schema,typed_times,builtin,no_counts"),
    ("+ 8 shuffle partitions with AQE", "schema,typed_times,builtin,no_counts,partitions"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1e6")
    parser.add_argument("--data-dir", type=Path, default=Path("workspace/bench/data"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    rows = int(float(args.rows))
    ensure_data(rows, args.data_dir, ["parquet", "csv"], 42, print)
    paths = data_paths(args.data_dir, rows)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    out = Path(tempfile.mkdtemp(prefix="spark-ablation-"))
    results = []
    variants = [("spark-naive", label, fixes) for label, fixes in STEPS]
    variants.append(("spark", "project pipeline: + Parquet with column pruning, broadcast-hinted joins", ""))
    for index, (engine, label, fixes) in enumerate(variants):
        command = [sys.executable, "-m", "taxi_duration.bench.workloads", engine, "--parquet", str(paths["parquet"])]
        command += ["--out", str(out / str(index)), "--train-rows", "0", "--naive-fixes", fixes]
        if engine == "spark-naive":
            command += ["--csv", str(paths["csv"])]
        measured = run_measured(command, env=env)
        payload = json.loads(measured.stdout.strip().splitlines()[-1]) if measured.returncode == 0 else None
        if payload is None:
            raise SystemExit(f"{label} failed: {measured.stderr[-2000:]}")
        steps = payload["steps"]
        seconds = steps["borough_report"] + steps["features"]
        results.append(
            {
                "variant": label,
                "engine": engine,
                "fixes": fixes,
                "seconds": round(seconds, 2),
                "child_seconds": round(measured.seconds, 2),
                "peak_rss_mb": round(measured.peak_rss_mb),
                "load_1min": round(measured.load_1min, 2),
                "results": payload["results"],
            }
        )
        print(f"{label}: {seconds:.1f} s (load {measured.load_1min:.2f})", flush=True)
    problems = [p for r in results[1:] for p in mismatches(results[0]["results"], r["results"])]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = REPO / "benchmarks" / "results" / f"spark-ablation-{stamp}.json"
    summary = {"machine": machine(), "rows": rows, "results": results, "mismatches": problems}
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if problems:
        raise SystemExit(f"variants disagree: {problems[:3]}")
    lines = [
        f"{rows:,} trips, measured {stamp} on {machine()}; raw results `benchmarks/results/{path.name}`.",
        "",
        "| variant (cumulative) | report + features s | vs lecture style | child wall s | peak RSS MB | load 1 min |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = results[0]["seconds"]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['seconds']:,.1f} | {base / r['seconds']:.1f}x | {r['child_seconds']:,.1f} "
            f"| {r['peak_rss_mb']:,} | {r['load_1min']} |"
        )
    lines.append("")
    lines.append("All variants computed the same report and feature sums.")
    text = "\n".join(lines)
    print(text)
    if not args.no_doc:
        replace_doc_section(DOC, START, END, f"{START}\n{text}\n{END}")


if __name__ == "__main__":
    main()
