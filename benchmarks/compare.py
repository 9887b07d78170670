"""pandas vs Polars vs DuckDB vs Spark on the same generated trips: run `taxi-duration bench compare` and put its
table and charts into docs/benchmarks.md and docs/img/, or render them from saved runs.

    python benchmarks/compare.py --rows 1e6,1e7 --engines pandas,polars,duckdb,spark,spark-naive --memory-cap 8g
    python benchmarks/compare.py --render benchmarks/results/compare-A.json benchmarks/results/compare-B.json

Runs write benchmarks/results/compare-<timestamp>.json. Several runs (e.g. 1e6-1e7 with CSV and training, then
5e7 Parquet only) are rendered as one table and one pair of charts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _measure import REPO, replace_doc_section
from taxi_duration.bench.report import markdown, write_charts

RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "benchmarks.md"
IMG = REPO / "docs" / "img"
START, END = "<!-- compare-results:start -->", "<!-- compare-results:end -->"


def merge(paths: list[Path]) -> dict[str, Any]:
    """Several saved runs as one summary (runs and mismatches concatenated; each run keeps its configuration)."""
    summaries = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    merged = {**summaries[0], "runs": [], "mismatches": [], "parts": []}
    for path, summary in zip(paths, summaries, strict=True):
        merged["runs"] += summary["runs"]
        merged["mismatches"] += summary["mismatches"]
        merged["parts"].append({"file": path.name, **summary})
    return merged


def section(merged: dict[str, Any]) -> str:
    charts = write_charts(merged, IMG)
    links = {f"{name} vs trips": os.path.relpath(path, DOC.parent) for name, path in charts.items()}
    blocks = []
    for index, part in enumerate(merged["parts"]):
        part_links = links if index == len(merged["parts"]) - 1 else None
        blocks.append(f"Raw results: `benchmarks/results/{part['file']}`.\n\n" + markdown(part, part_links))
    return "\n\n".join(blocks)


def write_doc(text: str) -> None:
    replace_doc_section(DOC, START, END, f"{START}\n{text}\n{END}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", nargs="+", type=Path, help="saved compare-*.json files to put into the docs")
    parser.add_argument("--no-doc", action="store_true", help="run only; do not touch docs/")
    args, passthrough = parser.parse_known_args()
    paths = args.render
    if not paths:
        out = Path(tempfile.mkdtemp(prefix="bench-compare-"))
        command = [sys.executable, "-m", "taxi_duration.cli", "bench", "compare", "--out", str(out), *passthrough]
        code = subprocess.run(command, check=False).returncode
        paths = []
        for produced in sorted(out.glob("compare-*.json")):
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(produced, RESULTS / produced.name)
            paths.append(RESULTS / produced.name)
        if code != 0 or not paths:
            raise SystemExit(code or 1)
    if not args.no_doc:
        text = section(merge(paths))
        write_doc(text)
        print(text)


if __name__ == "__main__":
    main()
