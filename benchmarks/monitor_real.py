"""Monitoring figures on the real TLC yellow months shipped with the package: a champion trained on 2018-01..03
(the default GBT), then `monitor` on every later 2018 month and on 2020-01..06 against its training window.

All commands run in one process through the CLI (one Spark session). Usage: python benchmarks/monitor_real.py
Writes benchmarks/results/monitor-real-<timestamp>.json and the table in docs/monitoring.md ("Real months").
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from _measure import REPO, machine, replace_doc_section
from taxi_duration import cli
from taxi_duration.spark import use_session_time_zone_in_python

SAMPLES = REPO / "src" / "taxi_duration" / "data" / "tlc_yellow_samples"
DOC = REPO / "docs" / "monitoring.md"
START, END = "<!-- monitor-real:start -->", "<!-- monitor-real:end -->"
MONTHS = [f"2018-{m:02d}" for m in range(4, 13)] + [f"2020-{m:02d}" for m in range(1, 7)]


def run(workspace: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli.app, ["--workspace", str(workspace), *args, "--json"])
    if result.exit_code != 0:
        raise SystemExit(f"{args[0]} failed ({result.exit_code}): {result.output[-2000:]} {result.exception}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def next_month(name: str) -> str:
    year, month = int(name[:4]), int(name[5:])
    return f"{year + month // 12}-{month % 12 + 1:02d}"


def main() -> None:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    use_session_time_zone_in_python()
    workspace = Path(tempfile.mkdtemp(prefix="monitor-real-"))
    run(workspace, "ingest", *[str(SAMPLES / f"yellow_tripdata_sample_2018-0{m}.csv.gz") for m in (1, 2, 3)])
    champion = run(workspace, "train")
    run(workspace, "ingest", *[str(SAMPLES / f"yellow_tripdata_sample_{m}.csv.gz") for m in MONTHS])
    # one monitor run over all later months, split by month: each month's drift is against the reference and
    # its realised error is its own (the per-window rows of the monitoring tables)
    result = run(workspace, "monitor", "--from", "2018-04-01", "--to", "2020-07-01", "--window", "month")
    monitoring = workspace / "lakehouse" / "monitoring"
    profile = pd.read_parquet(monitoring / "profile")
    profile = profile[(profile["level"] == "window") & (profile["period"] == "current")]
    drift = pd.read_parquet(monitoring / "drift")
    drift = drift[drift["window_start"].notna()]
    validation = result["realized"]["reference_rmsle"]
    thresholds = {"psi": 0.25, "js": 0.2}
    rows = []
    for _, window in profile.sort_values("window_start").iterrows():
        month = pd.Timestamp(window["window_start"]).strftime("%Y-%m")
        if month not in MONTHS:
            continue
        in_month = drift[pd.to_datetime(drift["window_start"]) == pd.Timestamp(window["window_start"])]
        by_feature = in_month.set_index("feature")
        inputs = by_feature.drop(index=["predicted_duration_minutes", "actual_duration_minutes"], errors="ignore")
        row = {
            "month": month,
            "trips": int(window["rows"]),
            "realized_rmsle": round(float(window["rmsle"]), 4),
            "ratio": round(float(window["rmsle"]) / validation, 2),
            "bias_minutes": round(float(window["bias_minutes"]), 2),
            "prediction_psi": round(float(by_feature.loc["predicted_duration_minutes", "psi"]), 3),
            "target_psi": round(float(by_feature.loc["actual_duration_minutes", "psi"]), 3),
            "drifted_features": sorted(inputs[inputs["drifted"]].index.tolist()),
        }
        prediction = by_feature.loc["predicted_duration_minutes"]
        row["alert"] = bool(
            row["ratio"] > 1.25
            or prediction["psi"] > thresholds["psi"]
            or prediction["js_distance"] > thresholds["js"]
            or len(row["drifted_features"]) >= 0.5 * len(inputs)
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = REPO / "benchmarks" / "results" / f"monitor-real-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine(), "champion": champion["metrics"], "rows": rows}, indent=2) + "\n")
    lines = [
        START,
        f"Champion: GBT (pipeline.yaml defaults) trained on 2018-01..03, {champion['data']['train_rows']:,} + "
        f"{champion['data']['validation_rows']:,} trips, validation RMSLE {champion['metrics']['rmsle']:.4f}. "
        f"Measured {time.strftime('%Y-%m-%d')} by `python benchmarks/monitor_real.py` ({out.name}).",
        "",
        "One `monitor --from 2018-04-01 --to 2020-07-01 --window month` run; per month: trips, whether that month "
        "alone passes the limits of `pipeline.yaml` (realised error, prediction drift, share of drifted features), "
        "and its figures against the training window.",
        "",
        "| month | trips | alert | realised RMSLE | ratio to validation | bias (min) | prediction PSI | target PSI "
        "| drifted features |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['month']} | {r['trips']:,} | {'**yes**' if r['alert'] else 'no'} | {r['realized_rmsle']} "
            f"| {r['ratio']} | {r['bias_minutes']} | {r['prediction_psi']} | {r['target_psi']} "
            f"| {', '.join(r['drifted_features']) or '-'} |"
        )
    lines.append(END)
    section = "\n".join(lines)
    print(section)
    replace_doc_section(DOC, START, END, section)


if __name__ == "__main__":
    main()
