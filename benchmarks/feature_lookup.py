"""The feature SQL's cost per trip against the size of the embedded travel-time table.

The table rides in the feature SQL as one JSON literal read by `from_json`, and each trip looks its zone pair up
with `element_at(<map>, key)`. This measures `with_features` (the statement `train`, `score`, the stream and
`monitor` run) over the same synthetic trips with tables of growing size (random zone pairs, as `train` would
build from more trips), then sums a pair feature so every row is computed. Usage:
    python benchmarks/feature_lookup.py [--rows 1000000] [--pairs 0,500,2000,10000,30000] [--repeats 3]
Prints one JSON line per table size and writes benchmarks/results/feature-lookup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from datetime import datetime

from _measure import REPO, machine
from _synthetic import local_session, random_travel_times, synthetic_trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", default="0,500,2000,10000,30000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import functions as F

    from taxi_duration.features.definitions import with_features

    spark = local_session("2g")
    trips = synthetic_trips(spark, args.rows).cache()
    trips.count()
    rng = random.Random(7)
    results = []
    for size in [int(n) for n in args.pairs.split(",")]:
        table = random_travel_times(rng, size)
        query = trips.transform(with_features, table).agg(F.sum("pair_median_minutes"), F.sum("pair_trips"))
        seconds = []
        for _ in range(args.repeats + 1):  # the first run warms up the JIT
            started = time.perf_counter()
            query.collect()
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds[1:])
        entry = {
            "pairs": size,
            "rows": args.rows,
            "median_s": round(median, 2),
            "us_per_trip_per_core": round(median * 2 / args.rows * 1e6, 2),
            "runs_s": [round(s, 2) for s in seconds[1:]],
            "load_1min": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(entry), flush=True)
        results.append(entry)
    out = REPO / "benchmarks" / "results" / f"feature-lookup-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    print(f"saved {out}")
    spark.stop()


if __name__ == "__main__":
    main()
