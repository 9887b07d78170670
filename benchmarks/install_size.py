"""The serving install against the full one: the wheel installed into two fresh virtualenvs (pip's cache), with no
extras (what `taxi-duration serve` / `predict` need) and with `[spark]` (what `make` installs), and the size of each
site-packages. Target (issue #13): the serving install at most a third of the full one.

Usage: python benchmarks/install_size.py [--no-doc] [--render RESULTS.json]
Writes benchmarks/results/install-size-<timestamp>.json and the "Install size" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import REPO, machine, replace_doc_section

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- install-size:start -->", "<!-- install-size:end -->"
TARGET_RATIO = 1 / 3
# what a serving install must not carry; the full install has all of them
HEAVY = ("pyspark", "py4j", "mlflow", "pyarrow", "scikit-learn", "scipy", "matplotlib", "sqlalchemy", "flask")


def install_sizes(tmp: Path) -> dict[str, Any]:
    """The wheel installed into fresh venvs (pip's cache): no extras (serving) and `[spark]` (the pipeline)."""
    dist = tmp / "dist"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)], check=True, env=env
    )
    wheel = next(dist.glob("taxi_duration_predictor-*.whl"))
    sizes: dict[str, Any] = {}
    for name, spec in (("serving", str(wheel)), ("full", f"{wheel}[spark]")):
        venv = tmp / f"venv-{name}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        print(f"install size: pip install {spec.rsplit('/', 1)[-1]} into {venv}", file=sys.stderr, flush=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", spec], check=True, env=env)
        site = next((venv / "lib").glob("python3*/site-packages"))
        used = subprocess.run(["du", "-sb", str(site)], capture_output=True, text=True, check=True)
        listed = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True
        )
        names = {p["name"].lower() for p in json.loads(listed.stdout)}
        sizes[name] = {
            "site_packages_mb": round(int(used.stdout.split()[0]) / 2**20),
            "packages": len(names),
            "heavy_present": [package for package in HEAVY if package in names],
        }
    sizes["ratio"] = round(sizes["serving"]["site_packages_mb"] / sizes["full"]["site_packages_mb"], 3)
    return sizes


def markdown(results: dict[str, Any]) -> str:
    s = results["sizes"]
    serving, full = s["serving"], s["full"]
    met = "yes" if s["ratio"] <= TARGET_RATIO else "**no**"
    absent = [package for package in HEAVY if package not in serving["heavy_present"]]
    return "\n".join(
        [
            START,
            "## Install size: serving against the full install",
            "",
            f"`python benchmarks/install_size.py`, {results['date']}, {results['machine']}. The wheel installed "
            "from pip's cache into two fresh virtualenvs: no extras (`serve` and `predict`) and `[spark]` (what "
            "`make` installs); `du -sb` of each site-packages.",
            "",
            "| install | site-packages | packages | target | met |",
            "|---|---:|---:|---|---|",
            f"| serving (`pip install taxi_duration_predictor-*.whl`) | {serving['site_packages_mb']:,} MB | "
            f"{serving['packages']} | ≤ 1/3 of full | {met} ({s['ratio']:.2f}) |",
            f"| full (`[spark]`) | {full['site_packages_mb']:,} MB | {full['packages']} | | |",
            "",
            f"Not in the serving install: {', '.join(absent)} (the MLflow client is `mlflow-skinny`; Parquet for "
            "the request log and `predict` is the `parquet` extra).",
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--render", type=Path, help="only rewrite the docs section from a saved results JSON")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text(encoding="utf-8"))
    else:
        with tempfile.TemporaryDirectory(prefix="install-size-") as tmp:
            results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "sizes": install_sizes(Path(tmp))}
        out = REPO / "benchmarks" / "results" / f"install-size-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(results))
        print(f"results: {out}")
    section = markdown(results)
    print(section)
    if not args.no_doc:
        replace_doc_section(DOC, START, END, section)


if __name__ == "__main__":
    main()
