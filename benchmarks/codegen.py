"""Scoring with features kept, at Spark's default code-size limit and at the one the project sets.

`monitor`, `score` and the stream keep the model's features next to its prediction. Whole-stage code generation
then compiles the feature SQL (zone and travel-time tables as literals), the assembler and the output into one
Java method, and past 8,000 bytes of bytecode HotSpot never JIT-compiles a method: the stage runs interpreted.
This fits the default GBT (`pipeline.yaml`'s settings) on synthetic trips with a travel-time table, then scores the
same trips keeping prediction and features with `spark.sql.codegen.hugeMethodLimit` at Spark's default (65535)
and at the project's (8000), interleaved, each round a full pass (a `noop` write), and the prediction alone as the
floor. Usage:
    python benchmarks/codegen.py [--rows 1000000] [--repeats 3]
Prints one JSON line per round and writes benchmarks/results/codegen-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from datetime import datetime

from _measure import REPO, machine
from _synthetic import local_session, random_travel_times, synthetic_trips

SPARK_DEFAULT = "65535"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fit-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import functions as F

    from taxi_duration.columns import PREDICTION
    from taxi_duration.features.definitions import LABEL
    from taxi_duration.monitor.job import scored_trips
    from taxi_duration.monitor.quality import in_window
    from taxi_duration.params import load_params
    from taxi_duration.spark import CODEGEN_HUGE_METHOD_LIMIT
    from taxi_duration.train.pipeline import build_pipeline

    spark = local_session("3g")
    scratch = tempfile.mkdtemp(prefix="codegen-")
    spark.sparkContext.setCheckpointDir(f"{scratch}/checkpoints")
    # written and read back as `trips` would be: columns the optimizer cannot fold (null coordinates as literals
    # would drop the coordinates-to-zone expression from the plan)
    synthetic_trips(spark, args.rows).withColumn(LABEL, F.log("duration_s")).write.parquet(f"{scratch}/trips")
    trips = spark.read.parquet(f"{scratch}/trips")
    table = random_travel_times(random.Random(7), 2000)
    params = load_params().train
    started = time.perf_counter()
    model = build_pipeline("gbt", params, table).fit(trips.limit(args.fit_rows))
    fit_s = time.perf_counter() - started
    window = (datetime(2024, 1, 1), datetime(2024, 3, 1))  # all the trips, filtered as `monitor` filters them
    scored = model.transform(trips)
    queries = {
        "prediction_only": scored.select(PREDICTION),
        # what `monitor` keeps (its own function): the trip's time and zone, features, actual and predicted minutes
        "with_features": scored_trips(trips.filter(in_window("pickup_datetime", window)), model, None),
    }
    limits = {"spark_default": SPARK_DEFAULT, "project": CODEGEN_HUGE_METHOD_LIMIT}
    runs: dict[str, list[float]] = {}
    for round_ in range(args.repeats + 1):  # round 0 warms up the JIT and is not counted
        for query_name, query in queries.items():
            for limit_name, limit in limits.items():
                if query_name == "prediction_only" and limit_name == "spark_default":
                    continue  # the prediction alone compiles small at either limit
                spark.conf.set("spark.sql.codegen.hugeMethodLimit", limit)
                began = time.perf_counter()
                query.write.format("noop").mode("overwrite").save()
                seconds = time.perf_counter() - began
                key = f"{query_name}@{limit_name}"
                print(json.dumps({"round": round_, "run": key, "seconds": round(seconds, 2)}), flush=True)
                if round_:
                    runs.setdefault(key, []).append(seconds)
    medians = {key: statistics.median(values) for key, values in runs.items()}
    result = {
        "rows": args.rows,
        "model": f"GBT {params.gbt}, fitted on {args.fit_rows:,} trips in {fit_s:.0f} s",
        "travel_time_pairs": len(table.pairs),
        "median_s": {key: round(value, 2) for key, value in medians.items()},
        "us_per_trip_per_core": {key: round(value * 2 / args.rows * 1e6, 2) for key, value in medians.items()},
        "slowdown_at_spark_default": round(
            medians["with_features@spark_default"] / medians["with_features@project"], 2
        ),
        "runs_s": {key: [round(v, 2) for v in values] for key, values in runs.items()},
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result), flush=True)
    out = REPO / "benchmarks" / "results" / f"codegen-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"machine": machine(), "results": [result]}, indent=2) + "\n")
    print(f"saved {out}")
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
