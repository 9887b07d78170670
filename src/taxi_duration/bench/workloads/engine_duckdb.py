"""The comparison workload in DuckDB SQL over the Parquet files (no training)."""

from __future__ import annotations

from typing import Any

from taxi_duration.bench.workloads.common import (
    CSV_TIME_FORMAT,
    DROPOFF,
    EARTH_RADIUS_MILES,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    LABEL,
    MAX_DURATION_S,
    MIN_DURATION_S,
    NEW_YORK,
    PICKUP,
    UNKNOWN_BOROUGH,
    Steps,
    Workload,
    csv_files,
    parquet_files,
    report_dict,
    zone_rows,
)


def run_duckdb(work: Workload, steps: Steps, memory_limit: int | None = None) -> dict[str, Any]:
    """The workload in DuckDB SQL over the Parquet files (spills to disk beyond its memory limit)."""
    import duckdb
    import pandas as pd

    results: dict[str, Any] = {}
    con = duckdb.connect()
    con.execute(f"SET temp_directory = '{work.out / 'duckdb_tmp'}'")
    if memory_limit:
        # leave room under the process cap for DuckDB's own allocations outside its buffer manager
        con.execute(f"SET memory_limit = '{int(memory_limit * 0.6) // 2**20}MB'")
    zones_frame = pd.DataFrame(zone_rows())
    con.register("zones", zones_frame)
    files = ", ".join(f"'{f}'" for f in parquet_files(work.parquet))
    con.execute(
        f"""CREATE VIEW valid AS
        SELECT *, epoch({DROPOFF}) - epoch({PICKUP}) AS duration_s
        FROM read_parquet([{files}])
        WHERE epoch({DROPOFF}) - epoch({PICKUP}) BETWEEN {MIN_DURATION_S} AND {MAX_DURATION_S}"""
    )
    with steps.step("borough_report"):
        rows_read, valid_trips = con.execute(
            f"SELECT (SELECT count(*) FROM read_parquet([{files}])), (SELECT count(*) FROM valid)"
        ).fetchone() or (0, 0)
        results["rows_read"], results["valid_trips"] = int(rows_read), int(valid_trips)
        report = con.execute(
            f"""SELECT coalesce(z.borough, '{UNKNOWN_BOROUGH}') AS borough, count(*) AS trips,
                       avg(t.duration_s) AS mean
                FROM valid AS t LEFT JOIN zones AS z ON t.PULocationID = z.LocationID
                GROUP BY 1"""
        ).fetchall()
        results["borough_report"] = report_dict([r[0] for r in report], [r[1] for r in report], [r[2] for r in report])
    with steps.step("features"):
        target = work.out / "features"
        target.mkdir(parents=True, exist_ok=True)
        # INT96 timestamps arrive as naive UTC: timezone('UTC', ts) makes the instant, then New York wall-clock
        con.execute(
            f"""COPY (
            WITH local AS (
                SELECT *, timezone('{NEW_YORK}', timezone('UTC', {PICKUP})) AS pickup_local FROM valid
            )
            SELECT CAST(hour(pickup_local) AS BIGINT) AS pickup_hour,
                   CAST(day(pickup_local) AS BIGINT) AS pickup_day,
                   CAST(isodow(pickup_local) AS BIGINT) AS pickup_weekday,
                   CAST(isodow(pickup_local) >= 6 AS BIGINT) AS is_weekend,
                   CAST(t.trip_distance AS DOUBLE) AS trip_distance,
                   coalesce(2 * {EARTH_RADIUS_MILES} * asin(sqrt(
                       pow(sin((radians(d.lat) - radians(p.lat)) / 2), 2)
                       + cos(radians(p.lat)) * cos(radians(d.lat)) * pow(sin((radians(d.lon) - radians(p.lon)) / 2), 2)
                   )), 0.0) AS centroid_miles,
                   CAST(coalesce(p.borough_code, 0) AS BIGINT) AS pickup_borough_code,
                   CAST(coalesce(d.borough_code, 0) AS BIGINT) AS dropoff_borough_code,
                   CAST(epoch({PICKUP}) AS BIGINT) AS pickup_epoch_s,
                   t.duration_s / 60.0 AS {LABEL}
            FROM local AS t
            LEFT JOIN zones AS p ON t.PULocationID = p.LocationID
            LEFT JOIN zones AS d ON t.DOLocationID = d.LocationID
            ) TO '{target / "part-0.parquet"}' (FORMAT parquet)"""
        )
        sums = ", ".join(f"sum({c})" for c in (*INT_COLUMNS, *FLOAT_COLUMNS))
        row = con.execute(f"SELECT count(*), {sums} FROM read_parquet('{target / 'part-0.parquet'}')").fetchone()
        assert row is not None
        results["features"] = {
            "rows": int(row[0]),
            **{c: int(v) for c, v in zip(INT_COLUMNS, row[1 : 1 + len(INT_COLUMNS)], strict=True)},
            **{c: float(v) for c, v in zip(FLOAT_COLUMNS, row[1 + len(INT_COLUMNS) :], strict=True)},
        }
    if work.csv:
        with steps.step("load_csv"):
            listed = ", ".join(f"'{f}'" for f in csv_files(work.csv))
            fmt = CSV_TIME_FORMAT
            row = con.execute(
                f"""WITH raw AS (
                    SELECT epoch(strptime({DROPOFF}, '{fmt}')) - epoch(strptime({PICKUP}, '{fmt}')) AS seconds
                    FROM read_csv([{listed}], header = true, all_varchar = true)
                )
                SELECT count(*), count(*) FILTER (WHERE seconds BETWEEN {MIN_DURATION_S} AND {MAX_DURATION_S}),
                       sum(seconds) FILTER (WHERE seconds BETWEEN {MIN_DURATION_S} AND {MAX_DURATION_S})
                FROM raw"""
            ).fetchone()
            assert row is not None
            results["csv"] = {"rows_read": int(row[0]), "valid_trips": int(row[1]), "sum_duration_s": int(row[2])}
    con.close()
    return results
