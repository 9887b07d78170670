"""The comparison workload in Polars: lazy queries, collected per step (no training)."""

from __future__ import annotations

from typing import Any

from taxi_duration.bench.workloads.common import (
    COLUMNS,
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


def run_polars(work: Workload, steps: Steps) -> dict[str, Any]:
    """The workload in Polars: lazy queries, collected per step."""
    import polars as pl

    results: dict[str, Any] = {}
    zones = pl.DataFrame(zone_rows(), schema_overrides={"LocationID": pl.Int32})
    duration = (pl.col(DROPOFF) - pl.col(PICKUP)).dt.total_seconds()
    scan = pl.scan_parquet(parquet_files(work.parquet)).select(COLUMNS)
    valid = scan.with_columns(duration.alias("duration_s")).filter(
        pl.col("duration_s").is_between(MIN_DURATION_S, MAX_DURATION_S)
    )
    with steps.step("borough_report"):
        counts = pl.concat(
            [scan.select(pl.len().alias("n")), valid.select(pl.len().alias("n"))], how="vertical"
        ).collect()
        results["rows_read"], results["valid_trips"] = int(counts["n"][0]), int(counts["n"][1])
        report = (
            valid.join(
                zones.lazy().select("LocationID", "borough"), how="left", left_on="PULocationID", right_on="LocationID"
            )
            .with_columns(pl.col("borough").fill_null(UNKNOWN_BOROUGH))
            .group_by("borough")
            .agg(pl.len().alias("trips"), pl.col("duration_s").mean().alias("mean"))
            .collect()
        )
        results["borough_report"] = report_dict(
            report["borough"].to_list(), report["trips"].to_list(), report["mean"].to_list()
        )
    with steps.step("features"):
        pickup_zones = zones.lazy().select(
            pl.col("LocationID").alias("PULocationID"),
            pl.col("lat").alias("lat1"),
            pl.col("lon").alias("lon1"),
            pl.col("borough_code").alias("pickup_borough_code"),
        )
        dropoff_zones = zones.lazy().select(
            pl.col("LocationID").alias("DOLocationID"),
            pl.col("lat").alias("lat2"),
            pl.col("lon").alias("lon2"),
            pl.col("borough_code").alias("dropoff_borough_code"),
        )
        local = pl.col(PICKUP).dt.replace_time_zone("UTC").dt.convert_time_zone(NEW_YORK)
        lat1, lat2 = pl.col("lat1").radians(), pl.col("lat2").radians()
        a = ((lat2 - lat1) / 2).sin() ** 2 + lat1.cos() * lat2.cos() * (
            ((pl.col("lon2").radians() - pl.col("lon1").radians()) / 2).sin() ** 2
        )
        features = (
            valid.join(pickup_zones, how="left", on="PULocationID")
            .join(dropoff_zones, how="left", on="DOLocationID")
            .select(
                local.dt.hour().cast(pl.Int64).alias("pickup_hour"),
                local.dt.day().cast(pl.Int64).alias("pickup_day"),
                local.dt.weekday().cast(pl.Int64).alias("pickup_weekday"),
                (local.dt.weekday() >= 6).cast(pl.Int64).alias("is_weekend"),
                pl.col("trip_distance").cast(pl.Float64),
                (2 * EARTH_RADIUS_MILES * a.sqrt().arcsin()).fill_null(0.0).alias("centroid_miles"),
                pl.col("pickup_borough_code").fill_null(0).cast(pl.Int64),
                pl.col("dropoff_borough_code").fill_null(0).cast(pl.Int64),
                pl.col(PICKUP).dt.epoch("s").cast(pl.Int64).alias("pickup_epoch_s"),
                (pl.col("duration_s") / 60.0).alias(LABEL),
            )
        )
        target = work.out / "features"
        target.mkdir(parents=True, exist_ok=True)
        features.sink_parquet(target / "part-0.parquet")
        written = pl.scan_parquet(target / "part-0.parquet")
        summary = written.select(
            pl.len().alias("rows"),
            *[pl.col(c).sum() for c in INT_COLUMNS],
            *[pl.col(c).sum() for c in FLOAT_COLUMNS],
        ).collect()
        row = summary.row(0, named=True)
        results["features"] = {
            "rows": int(row["rows"]),
            **{c: int(row[c]) for c in INT_COLUMNS},
            **{c: float(row[c]) for c in FLOAT_COLUMNS},
        }
    if work.csv:
        with steps.step("load_csv"):
            raw = pl.scan_csv(
                csv_files(work.csv),
                schema_overrides={PICKUP: pl.String, DROPOFF: pl.String, "trip_distance": pl.Float64},
            ).select(
                pl.col(PICKUP).str.to_datetime(CSV_TIME_FORMAT),
                pl.col(DROPOFF).str.to_datetime(CSV_TIME_FORMAT),
            )
            seconds = (pl.col(DROPOFF) - pl.col(PICKUP)).dt.total_seconds()
            ok = seconds.is_between(MIN_DURATION_S, MAX_DURATION_S)
            csv_summary = raw.select(
                pl.len().alias("rows_read"),
                ok.sum().alias("valid_trips"),
                seconds.filter(ok).sum().alias("sum_duration_s"),
            ).collect()
            results["csv"] = {key: int(value) for key, value in csv_summary.row(0, named=True).items()}
    return results
