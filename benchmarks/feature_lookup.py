"""The feature SQL's cost per trip against the size of the embedded travel-time table, and the two layouts of its
lookup tables side by side.

The tables ride in the feature SQL as JSON literals read by `from_json`. Layout `array` (the code's): zone values
and travel-time rows in arrays read by position (`get(array, i)`). Layout `map` (before 2026-11-30, rebuilt here
for the comparison): maps keyed by the zone id or pair key as a string, read with `element_at(map, key)`, which
Spark answers by comparing the key with the map's keys one by one. This measures every feature column of
`with_features` (the statement `train`, `score`, the stream and `monitor` run) over the same synthetic trips,
written to Spark's `noop` sink so every column of every row is computed, with tables of growing size (random zone
pairs, as `train` would build from more trips), in the project's session settings, the layouts interleaved. Usage:
    python benchmarks/feature_lookup.py [--rows 1000000] [--pairs 0,2000,10000,30000] [--repeats 3]
Prints one JSON line per (table size, layout) and writes benchmarks/results/feature-lookup-<timestamp>.json.
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
from _synthetic import random_travel_times, synthetic_trips

MAP_TYPE = "struct<pairs:map<string,array<double>>,boroughs:map<string,array<double>>,overall:array<double>>"


def map_layout(trips, table):  # type: ignore[no-untyped-def]
    """`with_features` as it was with maps: the same expressions, the lookups through `element_at(map, key)`."""
    from taxi_duration.features import definitions as d
    from taxi_duration.zones import load_zones

    zones = load_zones()
    geo = [z for z in zones if z.centroid_lat is not None]

    def literal(values: dict, sql_type: str) -> str:
        return d._json_literal({str(k): v for k, v in values.items()}, sql_type)

    lat = literal({z.location_id: z.centroid_lat for z in geo}, "map<string,double>")
    lon = literal({z.location_id: z.centroid_lon for z in geo}, "map<string,double>")
    borough = literal({z.location_id: int(z.borough_code) for z in zones}, "map<string,int>")
    airport = literal({z.location_id: 1 for z in zones if z.is_airport}, "map<string,int>")

    def at(table_sql: str, zone: str) -> str:
        return f"element_at({table_sql}, CAST(CAST({zone} AS INT) AS STRING))"

    def key(a: str, b: str) -> str:
        return f"CAST(CAST({a} AS INT) * 1000 + CAST({b} AS INT) AS STRING)"

    old = None
    if table is not None:
        document = {
            "pairs": {str(k): [None if v != v else v for v in row] for k, row in table.pairs.items()},
            "boroughs": {str(k): [None if v != v else v for v in row] for k, row in table.boroughs.items()},
            "overall": [None if v != v else v for v in table.overall],
        }
        old = f"from_json('{json.dumps(document, separators=(',', ':'))}', '{MAP_TYPE}')"
    replaced = {
        "pickup_lat": f"COALESCE(pickup_latitude, {at(lat, '_pu_zone')})",
        "pickup_lon": f"COALESCE(pickup_longitude, {at(lon, '_pu_zone')})",
        "dropoff_lat": f"COALESCE(dropoff_latitude, {at(lat, '_do_zone')})",
        "dropoff_lon": f"COALESCE(dropoff_longitude, {at(lon, '_do_zone')})",
        "pickup_borough": f"COALESCE({at(borough, '_pu_zone')}, 0)",
        "dropoff_borough": f"COALESCE({at(borough, '_do_zone')}, 0)",
        "pickup_is_airport": f"COALESCE({at(airport, '_pu_zone')}, 0)",
        "dropoff_is_airport": f"COALESCE({at(airport, '_do_zone')}, 0)",
    }
    if old is not None:
        replaced["_tt_pair"] = f"element_at({old}.pairs, {key('_pu_zone', '_do_zone')})"
        replaced["_tt_boroughs"] = f"element_at({old}.boroughs, {key('pickup_borough', 'dropoff_borough')})"
    frame = trips
    for stage in d.feature_stages(table):
        frame = frame.selectExpr("*", *[f"{replaced.get(name, expr)} AS {name}" for name, expr in stage])
    return frame.drop(*d.HELPER_COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", default="0,2000,10000,30000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import functions as F

    from taxi_duration.features.definitions import FEATURE_COLUMNS, with_features
    from taxi_duration.settings import Settings
    from taxi_duration.spark import get_spark

    spark = get_spark(Settings(spark_conf={"spark.ui.enabled": "false", "spark.driver.memory": "2g"}))
    trips = synthetic_trips(spark, args.rows).cache()
    trips.count()
    rng = random.Random(7)
    results = []
    for size in [int(n) for n in args.pairs.split(",")]:
        table = random_travel_times(rng, size) if size else None
        queries = {
            "array": trips.transform(with_features, table).select(*FEATURE_COLUMNS),
            "map": map_layout(trips, table).select(*FEATURE_COLUMNS),
        }
        checksums = {
            layout: query.select(F.sum(F.xxhash64(*FEATURE_COLUMNS) % 1_000_003)).first()[0]
            for layout, query in queries.items()
        }
        assert checksums["array"] == checksums["map"], checksums  # the same features, bit for bit
        seconds: dict[str, list[float]] = {layout: [] for layout in queries}
        for _ in range(args.repeats + 1):  # the first round warms up the JIT
            for layout, query in queries.items():
                started = time.perf_counter()
                query.write.format("noop").mode("overwrite").save()
                seconds[layout].append(time.perf_counter() - started)
        for layout, runs in seconds.items():
            median = statistics.median(runs[1:])
            entry = {
                "pairs": size,
                "layout": layout,
                "rows": args.rows,
                "median_s": round(median, 2),
                "us_per_trip_per_core": round(median * 2 / args.rows * 1e6, 2),
                "runs_s": [round(s, 2) for s in runs[1:]],
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
