"""Model quality on real TLC months, per regime, against the zone-pair baseline and scikit-learn.

Trains on the real yellow months 2018-01..09 (package data, 10,000 sampled trips each) and validates on
2018-10..12, with the code `train` runs (`train.job.fit_model`: travel-time table out of fold, masked distances,
the default GBT settings of pipeline.yaml) and reports, for each regime (`recorded_distance`, `zones_only`,
`coordinates_only` from zone centroids):
- the default model (one model for every regime), RMSLE on minutes and on seconds (Kaggle's definition);
- the zone-pair median baseline on the same trips;
- MLlib GBT trained for one regime only (no masking; all distances hidden) with the same settings;
- scikit-learn HistGradientBoosting on the same feature rows and split (600 iterations, 63 leaves), trained on the
  same masked rows, and trained for one regime only;
plus JFK (132) -> Times Square (230) on a weekday at 08:30 with zones only.

Usage: python benchmarks/model_quality.py [--gbt '{"maxIter": 60}'] [--kind xgboost [--xgboost '{...}']]
Writes benchmarks/results/model-quality-<timestamp>.json and (GBT only) the section of docs/model_quality.md between
the model-quality markers. `--kind xgboost` measures XGBoost's Spark estimator the same way (its settings in the
`gbt` fields of the result, the kind in `kind`) and leaves the docs as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from _measure import CLI, REPO, machine, replace_doc_section

DOC = REPO / "docs" / "model_quality.md"
MONTHS = REPO / "src" / "taxi_duration" / "data" / "tlc_yellow_samples"
START, END = "<!-- model-quality:start -->", "<!-- model-quality:end -->"
CUTOFF = "2018-10-01"
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def ingest(workspace: Path) -> dict[str, Any]:
    marker = workspace / "ingested.json"
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    files = sorted(str(p) for p in MONTHS.glob("yellow_tripdata_sample_2018-*.csv.gz"))
    done = subprocess.run(
        [CLI, "--workspace", str(workspace), "ingest", *files, "--json"], capture_output=True, text=True, env=ENV
    )
    if done.returncode != 0:
        raise SystemExit(f"ingest failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    marker.write_text(json.dumps(result))
    return dict(result)


def rmsle(predicted_minutes: np.ndarray, actual_minutes: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.log1p(predicted_minutes) - np.log1p(actual_minutes)) ** 2)))


def measure(workspace: Path, gbt: dict[str, Any], kind: str = "gbt") -> dict[str, Any]:
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from sklearn.ensemble import HistGradientBoostingRegressor

    from taxi_duration.features.definitions import FEATURE_COLUMNS, LABEL, with_features
    from taxi_duration.params import load_params
    from taxi_duration.regimes import REGIMES
    from taxi_duration.settings import Settings
    from taxi_duration.spark import configure_driver_process, get_spark
    from taxi_duration.train.evaluate import as_regime, with_baseline_prediction, zone_pair_medians
    from taxi_duration.train.job import (
        MODEL_INPUT_COLUMNS,
        fit_model,
        mask_distance,
        metrics_by_regime,
        training_features,
        training_frame,
    )
    from taxi_duration.train.travel_times import build_travel_times

    configure_driver_process(Settings(workspace=workspace))
    spark = get_spark(Settings(workspace=workspace), "model-quality-benchmark")
    defaults = load_params()
    params = defaults.model_copy(
        update={"train": defaults.train.model_copy(update={kind: {**getattr(defaults.train, kind), **gbt}})}
    )
    trips = spark.read.parquet(str(workspace / "lakehouse" / "trips")).filter(
        "pickup_datetime >= '2018-01-01' AND pickup_datetime < '2019-01-01'"
    )
    labeled = training_frame(trips, None, params.train.seed).select(*MODEL_INPUT_COLUMNS)
    train = labeled.filter(F.col("pickup_datetime") < F.lit(CUTOFF)).persist(StorageLevel.MEMORY_AND_DISK)
    valid = labeled.filter(F.col("pickup_datetime") >= F.lit(CUTOFF)).persist(StorageLevel.MEMORY_AND_DISK)
    rows = {"train": train.count(), "validation": valid.count()}
    travel_times = build_travel_times(train, params.train.travel_times.min_trips)
    valid_b = valid.transform(with_baseline_prediction(zone_pair_medians(train))).persist()

    def with_mask(fraction: float) -> Any:
        return params.model_copy(
            update={"train": params.train.model_copy(update={"masked_distance_fraction": fraction})}
        )

    settings = getattr(params.train, kind)
    results: dict[str, Any] = {"rows": rows, "kind": kind, "gbt": settings, "pairs": len(travel_times.pairs)}
    started = time.perf_counter()
    model, _ = fit_model(train, kind, params, False, travel_times)
    results["gbt_fit_seconds"] = round(time.perf_counter() - started, 1)
    results["model"] = metrics_by_regime(model, valid_b)
    # the same GBT trained for one regime only: every distance kept, or every distance hidden
    recorded_only, _ = fit_model(train, kind, with_mask(0.0), False, travel_times)
    results["gbt_recorded_only"] = metrics_by_regime(recorded_only, valid_b)["recorded_distance"]
    zones_params = with_mask(0.0)
    zones_train = mask_distance(train, 1.0, 0)  # all hidden; the table is built before masking, as in train
    zones_only, _ = fit_model(zones_train, kind, zones_params, False, travel_times)
    results["gbt_zones_only"] = metrics_by_regime(zones_only, valid_b)["zones_only"]

    # JFK -> Times Square, a Wednesday at 08:30, zones only
    ride = spark.createDataFrame(
        [(datetime(2018, 10, 10, 8, 30), 132, 230)], "pickup_datetime timestamp, pu int, do int"
    ).selectExpr(
        "pickup_datetime",
        "pu AS pickup_location_id",
        "do AS dropoff_location_id",
        *[f"CAST(NULL AS DOUBLE) AS {c}" for c in ("pickup_latitude", "pickup_longitude")],
        *[f"CAST(NULL AS DOUBLE) AS {c}" for c in ("dropoff_latitude", "dropoff_longitude", "trip_distance")],
    )
    minutes = model.transform(ride).select(F.exp("prediction") / 60).first()
    results["jfk_to_times_square_zones_only_minutes"] = round(float(minutes[0]), 1) if minutes else None

    # scikit-learn on the same feature rows
    def frame(df: Any) -> Any:
        return df.select(*FEATURE_COLUMNS, LABEL, "duration_s", "baseline_minutes").toPandas()

    def hgb() -> Any:
        return HistGradientBoostingRegressor(max_iter=600, max_leaf_nodes=63, learning_rate=0.1, random_state=0)

    train_rows = training_features(train, travel_times, params).toPandas()
    zones_rows = training_features(zones_train, travel_times, zones_params).toPandas()
    sklearn_masked = hgb().fit(train_rows[list(FEATURE_COLUMNS)], train_rows[LABEL])
    sklearn_recorded = hgb().fit(
        train_rows.loc[train_rows.trip_distance_filled >= 0, list(FEATURE_COLUMNS)],
        train_rows.loc[train_rows.trip_distance_filled >= 0, LABEL],
    )
    sklearn_zones = hgb().fit(zones_rows[list(FEATURE_COLUMNS)], zones_rows[LABEL])
    results["sklearn"] = {}
    for regime in REGIMES:
        rows_r = frame(with_features(as_regime(valid_b, regime), travel_times))
        actual = rows_r["duration_s"].to_numpy() / 60.0
        x = rows_r[list(FEATURE_COLUMNS)]
        entry = {"masked": rmsle(np.exp(sklearn_masked.predict(x)) / 60.0, actual), "rows": len(rows_r)}
        if regime == "recorded_distance":
            entry["for_regime"] = rmsle(np.exp(sklearn_recorded.predict(x)) / 60.0, actual)
        if regime == "zones_only":
            entry["for_regime"] = rmsle(np.exp(sklearn_zones.predict(x)) / 60.0, actual)
        results["sklearn"][regime] = entry
    return results


def render(result: dict[str, Any]) -> str:
    r = result["results"]
    kind = "GBT" if r.get("kind", "gbt") == "gbt" else r["kind"]
    lines = [
        START,
        f"Measured {result['measured_at']} on {result['machine']}: `python benchmarks/model_quality.py`.",
        f"Train: real yellow trips 2018-01..09 ({r['rows']['train']:,}), validation 2018-10..12 "
        f"({r['rows']['validation']:,}); {kind} `{json.dumps(r['gbt'])}` "
        f"({r['gbt_fit_seconds']} s to fit here); "
        f"{r['pairs']:,} zone pairs in the travel-time table. RMSLE on minutes (what `train` reports and promotion "
        "compares); the model's RMSLE on seconds (Kaggle's definition) in brackets.",
        "",
        f"| regime | rows | model (one for all) | zone-pair baseline | model / baseline | {kind} for this regime only "
        "| HistGradientBoosting, same rows | HistGradientBoosting for this regime only |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    only = {"recorded_distance": r["gbt_recorded_only"], "zones_only": r["gbt_zones_only"]}
    for regime, m in r["model"].items():
        sk = r["sklearn"].get(regime, {})
        own = only.get(regime)
        cells = [
            f"`{regime}`",
            f"{m['rows']:,}",
            f"{m['rmsle']:.4f} ({m['rmsle_seconds']:.4f})",
            f"{m['baseline_rmsle']:.4f}",
            f"{m['rmsle'] / m['baseline_rmsle']:.2f}",
            f"{own['rmsle']:.4f}" if own else "-",
            f"{sk['masked']:.4f}" if "masked" in sk else "-",
            f"{sk['for_regime']:.4f}" if "for_regime" in sk else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"JFK (132) -> Times Square (230), Wednesday 2018-10-10 08:30, zones only: "
        f"**{r['jfk_to_times_square_zones_only_minutes']} min**.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace" / "bench" / "model-quality")
    parser.add_argument("--gbt", default="{}", help="GBT settings over pipeline.yaml's, as JSON")
    parser.add_argument("--kind", default="gbt", choices=["gbt", "xgboost"], help="the model kind measured")
    parser.add_argument("--xgboost", default="{}", help="with --kind xgboost: its settings over pipeline.yaml's")
    parser.add_argument("--no-docs", action="store_true", help="print and save, leave the docs as they are")
    args = parser.parse_args()
    args.workspace.mkdir(parents=True, exist_ok=True)
    ingested = ingest(args.workspace)
    result = {
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "ingested": {k: ingested[k] for k in ("rows_in", "rows_clean", "rows_quarantined")},
        "results": measure(args.workspace, json.loads(args.xgboost if args.kind == "xgboost" else args.gbt), args.kind),
    }
    out = REPO / "benchmarks" / "results" / f"model-quality-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    section = render(result)
    print(section)
    if not args.no_docs and args.kind == "gbt":
        replace_doc_section(DOC, START, END, section)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
