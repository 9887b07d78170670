"""Where one streaming micro-batch's time goes: `ScoreBatch` run on prepared batches, in one process.

The stream benchmark (stream.py) measures latency end to end; this one takes the streaming machinery away and
times what `foreachBatch` does with a batch of landed files, phase by phase (`commits/N.json`), plus the driver-side
pieces the per-batch cost was cut on: building the normalise/classify plan with a fresh `BatchClassifier` against
a reused one, and the champion's `model.transform` (its SQLTransformer analyses the feature SQL every batch).

Usage: python benchmarks/stream_batch.py [--batches 20] [--files-per-batch 5] [--trips-per-file 2500]
Writes benchmarks/results/stream-batch-<timestamp>.json and the section of docs/benchmarks.md between the
stream-batch markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from _measure import CLI, REPO, machine, replace_doc_section

DOC = REPO / "docs" / "benchmarks.md"
SAMPLE = REPO / "src" / "taxi_duration" / "data" / "taxis_sample_2019-03.csv"
START, END = "<!-- stream-batch:start -->", "<!-- stream-batch:end -->"
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
WARM_BATCHES = 8  # the JVM compiles the hot paths over the first batches: left out of the medians


def cli(workspace: Path, *args: str) -> dict:
    done = subprocess.run(
        [CLI, "--workspace", str(workspace), *args, "--json"], capture_output=True, text=True, env=ENV
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_seconds(action, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)), 3)


def measure(base: Path, model_ws: Path, batches: int, files_per_batch: int) -> dict:
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from pyspark.sql import functions as F

    from taxi_duration.lakehouse import read_trips
    from taxi_duration.params import QualityParams
    from taxi_duration.settings import Settings
    from taxi_duration.spark import configure_driver_process, get_spark
    from taxi_duration.stream.paths import StreamPaths
    from taxi_duration.stream.scorer import ChampionTracker, ScoreBatch
    from taxi_duration.stream.sources import FILE_URI, LANDED_AT, LINE, BatchClassifier, batch_files, plan_files
    from taxi_duration.tracking import configure_mlflow

    settings = Settings(workspace=model_ws)
    configure_driver_process(settings)
    spark = get_spark(settings, "stream-batch-benchmark")
    configure_mlflow(settings)
    spark.conf.set("spark.sql.shuffle.partitions", str(spark.sparkContext.defaultParallelism))  # as `stream` does
    landing = base / "landing"
    paths = StreamPaths.under(base / "out", landing)
    paths.make()
    tracker = ChampionTracker(settings.model_name, "champion")
    scorer = ScoreBatch(paths, QualityParams(), tracker)
    files = sorted(str(p) for p in landing.glob("*.csv"))

    def lines_of(group: list[str]):  # type: ignore[no-untyped-def]
        return (
            spark.read.format("text")
            .load(group)
            .select(
                F.col(LINE),
                F.col("_metadata.file_path").alias(FILE_URI),
                F.col("_metadata.file_modification_time").alias(LANDED_AT),
            )
        )

    totals, phases = [], []
    for batch_id in range(batches):
        group = files[batch_id * files_per_batch : (batch_id + 1) * files_per_batch]
        started = time.perf_counter()
        scorer(lines_of(group), batch_id)
        totals.append(round(time.perf_counter() - started, 3))
        record = json.loads((paths.commits / f"{batch_id}.json").read_text())
        phases.append(record["seconds"])
        print(f"batch {batch_id}: {record['trips']:,} trips, {totals[-1]:.2f} s {record['seconds']}", flush=True)

    # the driver-side pieces, on the last batch's lines
    lines = lines_of(files[(batches - 1) * files_per_batch : batches * files_per_batch]).persist()
    landed, keys = batch_files(lines)
    planned, _ = plan_files(spark, landed, keys)
    reused = BatchClassifier(QualityParams())
    reused(lines, planned)
    model, _ = tracker.current(spark)
    trips = read_trips(spark, model_ws / "lakehouse" / "trips")  # the committed trips, as every stage reads them
    pieces = {
        "classify_plan_fresh_classifier": median_seconds(lambda: BatchClassifier(QualityParams())(lines, planned), 5),
        "classify_plan_reused_classifier": median_seconds(lambda: reused(lines, planned), 5),
        "model_transform_plan": median_seconds(lambda: model.transform(trips), 5),
        "feature_sql_transform_plan": median_seconds(lambda: model.stages[0].transform(trips), 5),
    }
    lines.unpersist()
    steady = slice(WARM_BATCHES, None)
    names = list(phases[-1])
    return {
        "batches": batches,
        "files_per_batch": files_per_batch,
        "trips_per_batch_median": int(
            np.median([json.loads((paths.commits / f"{i}.json").read_text())["trips"] for i in range(batches)])
        ),
        "batch_seconds": totals,
        "batch_seconds_median_steady": round(float(np.median(totals[steady])), 3),
        "batch_seconds_first": totals[0],
        "phase_seconds_median_steady": {n: round(float(np.median([p[n] for p in phases[steady]])), 3) for n in names},
        "driver_side_seconds_median": pieces,
        "model": f"{settings.model_name} ({tracker.version})",
    }


def render(results: dict) -> str:
    r = results
    phases = r["phase_seconds_median_steady"]
    pieces = r["driver_side_seconds_median"]
    return "\n".join(
        [
            START,
            "## One streaming micro-batch (`ScoreBatch`)",
            "",
            f"Measured {r['date']} on {r['machine']}; `python benchmarks/stream_batch.py --batches {r['batches']} "
            f"--files-per-batch {r['files_per_batch']} --trips-per-file {r['trips_per_file']}`. What `foreachBatch` "
            f"does with {r['files_per_batch']} landed TLC CSV files ({r['trips_per_batch_median']:,} clean trips a "
            "batch; synthetic yellow trips written by `replay`), called directly in one process (`local[*]`), "
            f"with the GBT champion. Load average (1/5/15 min) before the run: {r['load_before']}. The first "
            f"{WARM_BATCHES} batches warm the JVM up and are left out of the medians.",
            "",
            "| batch seconds (median) | first batch | " + " | ".join(phases) + " |",
            "|---:|---:|" + "---:|" * len(phases),
            f"| {r['batch_seconds_median_steady']} | {r['batch_seconds_first']} | "
            + " | ".join(str(v) for v in phases.values())
            + " |",
            "",
            "Driver-side planning, median of 5 (seconds): building the normalise/classify plan of a batch with a "
            f"fresh `BatchClassifier` {pieces['classify_plan_fresh_classifier']}, with the stream's reused one "
            f"{pieces['classify_plan_reused_classifier']}; the champion's `model.transform` "
            f"{pieces['model_transform_plan']}, of which the feature SQLTransformer "
            f"{pieces['feature_sql_transform_plan']}. Raw results: `benchmarks/results/stream-batch-*.json`.",
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--files-per-batch", type=int, default=5)
    parser.add_argument("--trips-per-file", type=int, default=2500)
    parser.add_argument("--no-doc", action="store_true", help="Do not rewrite docs/benchmarks.md.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary workspace.")
    args = parser.parse_args()
    if args.batches <= WARM_BATCHES:
        raise SystemExit(f"--batches: expected more than {WARM_BATCHES} (the warm-up batches), found {args.batches}")
    base = Path(tempfile.mkdtemp(prefix="bench-stream-batch-", dir=os.environ.get("BENCH_TMP")))
    model_ws = base / "model"
    load_before = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    try:
        cli(model_ws, "ingest", str(SAMPLE))
        cli(model_ws, "train", "--model", "gbt")
        files = args.batches * args.files_per_batch
        cli(model_ws, "generate", "--rows", str(files * args.trips_per_file), "--out", str(base / "raw"))
        raw = next((base / "raw").iterdir())
        fps = 1000.0  # files land as fast as they are written; each holds trips-per-file trips
        rate = str(args.trips_per_file * fps)
        (base / "landing").mkdir(parents=True)
        replay = ["--rate", rate, "--files-per-second", str(fps), "--landing", str(base / "landing")]
        cli(model_ws, "replay", "--from", str(raw), *replay)
        results = measure(base, model_ws, args.batches, args.files_per_batch)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    results.update(
        {
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": machine(),
            "load_before": load_before,
            "trips_per_file": args.trips_per_file,
        }
    )
    out = REPO / "benchmarks" / "results" / f"stream-batch-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    section = render(results)
    print(section)
    if not args.no_doc:
        replace_doc_section(DOC, START, END, section)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
