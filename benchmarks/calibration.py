"""Calibrate synthetic trips against the real 2019-03 sample: tables, docs/calibration.md, plot."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pyspark
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from _measure import REPO
from taxi_duration.generate.synthetic import synthetic_trips
from taxi_duration.settings import Settings
from taxi_duration.spark import configure_driver_process, get_spark
from taxi_duration.zones import load_zones, package_data_path

DOC = REPO / "docs" / "calibration.md"
PLOT = REPO / "docs" / "img" / "calibration.png"
SAMPLE = "taxis_sample_2019-03.csv"
YEAR, MONTH = 2019, 3
DEFAULT_ROWS = 200_000
DEFAULT_SEED = 42
MIN_DURATION_S, MAX_DURATION_S = 60, 6 * 3600
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90, 0.99)
CDF_LEVELS = tuple(level / 100 for level in range(1, 100))
BOROUGHS = ("Manhattan", "Queens", "Brooklyn", "Bronx", "Staten Island", "EWR", "Unknown")


@dataclass(frozen=True)
class Stats:
    """Distribution summary of clean trips: quantiles, CDF grid, hourly and borough shares."""

    trips: int
    duration: tuple[float, ...]  # at QUANTILES
    distance: tuple[float, ...]
    duration_cdf: tuple[float, ...]  # at CDF_LEVELS
    distance_cdf: tuple[float, ...]
    hourly: tuple[float, ...]  # share of trips by pickup hour 0-23
    borough: dict[str, float]  # share of trips by pickup borough


def borough_shares(counts: dict[int, int]) -> dict[str, float]:
    """Share of trips by pickup borough from counts by PULocationID (264/265 are "Unknown")."""
    borough_of = {zone.location_id: zone.borough for zone in load_zones()}
    total = sum(counts.values())
    shares = dict.fromkeys(BOROUGHS, 0.0)
    for zone, count in counts.items():
        name = borough_of.get(zone, "Unknown")
        shares[name if name in shares else "Unknown"] += count / total
    return shares


def real_stats(service: str) -> Stats:
    """Statistics of the service's clean trips in the packaged real sample (pandas: 6,500 rows)."""
    raw = pd.read_csv(package_data_path(SAMPLE), parse_dates=["tpep_pickup_datetime", "tpep_dropoff_datetime"])
    trips = raw[raw["color"] == service].copy()  # green rows carry their lpep times in the tpep columns
    trips["duration_s"] = (trips["tpep_dropoff_datetime"] - trips["tpep_pickup_datetime"]).dt.total_seconds()
    clean = trips[trips["duration_s"].between(MIN_DURATION_S, MAX_DURATION_S) & (trips["trip_distance"] > 0)]
    hours = clean["tpep_pickup_datetime"].dt.hour.value_counts(normalize=True)
    return Stats(
        trips=len(clean),
        duration=tuple(clean["duration_s"].quantile(QUANTILES)),
        distance=tuple(clean["trip_distance"].quantile(QUANTILES)),
        duration_cdf=tuple(clean["duration_s"].quantile(CDF_LEVELS)),
        distance_cdf=tuple(clean["trip_distance"].quantile(CDF_LEVELS)),
        hourly=tuple(float(hours.get(hour, 0.0)) for hour in range(24)),
        borough=borough_shares({int(str(zone)): int(n) for zone, n in clean["PULocationID"].value_counts().items()}),
    )


def synthetic_stats(trips: DataFrame, service: str) -> Stats:
    """The same statistics of clean synthetic trips, aggregated by Spark (only small results collected)."""
    prefix = "tpep" if service == "yellow" else "lpep"
    pickup, dropoff = f"{prefix}_pickup_datetime", f"{prefix}_dropoff_datetime"
    duration = F.unix_seconds(dropoff) - F.unix_seconds(pickup)
    clean = (
        trips.withColumn("duration_s", duration)
        .where(F.col("duration_s").between(MIN_DURATION_S, MAX_DURATION_S) & (F.col("trip_distance") > 0))
        .cache()
    )
    row = clean.select(
        F.count("*").alias("trips"),
        F.percentile("duration_s", list(QUANTILES)).alias("duration"),
        F.percentile("trip_distance", list(QUANTILES)).alias("distance"),
        F.percentile("duration_s", list(CDF_LEVELS)).alias("duration_cdf"),
        F.percentile("trip_distance", list(CDF_LEVELS)).alias("distance_cdf"),
    ).first()
    assert row is not None
    hours = {r["hour"]: r["count"] for r in clean.groupBy(F.hour(pickup).alias("hour")).count().collect()}
    zones = {r["PULocationID"]: r["count"] for r in clean.groupBy("PULocationID").count().collect()}
    clean.unpersist()
    return Stats(
        trips=row["trips"],
        duration=tuple(row["duration"]),
        distance=tuple(row["distance"]),
        duration_cdf=tuple(row["duration_cdf"]),
        distance_cdf=tuple(row["distance_cdf"]),
        hourly=tuple(hours.get(hour, 0) / row["trips"] for hour in range(24)),
        borough=borough_shares(zones),
    )


def comparison_rows(synthetic: Stats, real: Stats) -> list[tuple[str, str, str, str]]:
    """(metric, synthetic, real, synthetic / real) rows for quantiles and the hourly-profile distance."""
    rows = []
    for name, unit, fmt, synth, actual in (
        ("duration", "s", "{:.0f}", synthetic.duration, real.duration),
        ("distance", "mi", "{:.2f}", synthetic.distance, real.distance),
    ):
        for level, s, r in zip(QUANTILES, synth, actual, strict=True):
            rows.append((f"{name} p{round(level * 100)} ({unit})", fmt.format(s), fmt.format(r), f"{s / r:.2f}"))
    tvd = 0.5 * sum(abs(s - r) for s, r in zip(synthetic.hourly, real.hourly, strict=True))
    rows.append(("hourly profile: total variation distance", f"{tvd:.3f}", "0", "-"))
    return rows


def print_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A plain fixed-width table on stdout."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, tuple("-" * width for width in widths), *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)))


def markdown_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def plot(synthetic: Stats, real: Stats, path: Path) -> None:
    """Duration CDF, distance CDF, hourly profile and borough shares, synthetic against real."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, synth, actual, label in (
        (axes[0, 0], synthetic.duration_cdf, real.duration_cdf, "duration (s)"),
        (axes[0, 1], synthetic.distance_cdf, real.distance_cdf, "distance (miles)"),
    ):
        ax.plot(synth, CDF_LEVELS, label="synthetic")
        ax.plot(actual, CDF_LEVELS, label="real 2019-03 sample", linestyle="--")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("CDF (clean trips)")
        ax.grid(alpha=0.3)
        ax.legend()
    hours = range(24)
    axes[1, 0].plot(hours, synthetic.hourly, marker="o", label="synthetic")
    axes[1, 0].plot(hours, real.hourly, marker="s", linestyle="--", label="real 2019-03 sample")
    axes[1, 0].set_xlabel("pickup hour")
    axes[1, 0].set_ylabel("share of trips")
    axes[1, 0].set_xticks(range(0, 24, 2))
    axes[1, 0].grid(alpha=0.3)
    axes[1, 0].legend()
    positions = range(len(BOROUGHS))
    axes[1, 1].bar([p - 0.2 for p in positions], [synthetic.borough[b] for b in BOROUGHS], 0.4, label="synthetic")
    axes[1, 1].bar([p + 0.2 for p in positions], [real.borough[b] for b in BOROUGHS], 0.4, label="real")
    axes[1, 1].set_xticks(list(positions), BOROUGHS, rotation=20)
    axes[1, 1].set_yscale("log")
    axes[1, 1].set_ylabel("share of pickups")
    axes[1, 1].legend()
    fig.suptitle("Synthetic yellow trips vs the real 2019-03 sample (clean trips: 60 s - 6 h, distance > 0)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_doc(
    synthetic: Stats, real: Stats, green: tuple[Stats, Stats], rows: int, seed: int, seconds: float, path: Path
) -> None:
    """docs/calibration.md: the measured comparison and how to regenerate it."""
    hourly = [
        (f"{hour:02d}", f"{s:.3f}", f"{r:.3f}")
        for hour, s, r in zip(range(24), synthetic.hourly, real.hourly, strict=True)
    ]
    borough = [(b, f"{synthetic.borough[b]:.3f}", f"{real.borough[b]:.3f}") for b in BOROUGHS]
    load = os.getloadavg()[0]
    text = f"""# Calibration of the synthetic trip generator

`taxi_duration.generate.synthetic_trips` generated {rows:,} yellow trips for 2019-03 (seed {seed}),
compared here with the real TLC sample `src/taxi_duration/data/{SAMPLE}` ({real.trips:,} clean yellow
trips). Both sides keep clean trips only: {MIN_DURATION_S} s <= duration <= {MAX_DURATION_S // 3600} h and
distance > 0 ({synthetic.trips:,} synthetic trips remain). Quantiles of the real sample carry sampling
noise of a few percent, its upper tail (p90, p99) more.

How the generator works: pickup zones are drawn from the sample's zone counts (smoothed so that all 263
zones occur), dropoff zones from a gravity model fitted so that dropoff shares match the sample, the
pickup hour from the sample's hourly profile; distance is the zone-to-zone distance times a road factor
with lognormal noise, speed depends on hour, weekday, borough and trip length. The synthetic "Unknown"
pickups are the default `unknown_zone` dirt (1 % of trips, two thirds of them at pickup).

Measured on {platform.system()} {platform.machine()} with {os.cpu_count()} cores shared with other work
(load average {load:.1f} at the end), Python {platform.python_version()}, PySpark {pyspark.__version__}
in local mode: generating the {rows:,} rows took {seconds:.1f} s, lookup tables and code generation
included. Regenerate this page and the plot with

```bash
export SPARK_LOCAL_IP=127.0.0.1
.venv/bin/python benchmarks/calibration.py  # options: --rows, --seed, --no-write
```

## Duration and distance

{markdown_table(("metric", "synthetic", "real", "synthetic / real"), comparison_rows(synthetic, real))}

![synthetic vs real](img/{PLOT.name})

## Share of trips by pickup hour

{markdown_table(("hour", "synthetic", "real"), hourly)}

## Share of trips by pickup borough

{markdown_table(("borough", "synthetic", "real"), borough)}

## Green trips

The green sample is small ({green[1].trips:,} clean trips), so its quantiles are rougher; {green[0].trips:,}
clean synthetic green trips of 2019-03 (seed {seed}):

{markdown_table(("metric", "synthetic", "real", "synthetic / real"), comparison_rows(*green))}
"""
    path.write_text(text, encoding="utf-8")


def main() -> None:
    """Generate, compare, print, write the doc and the plot."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="calibration-") as workspace:
        settings = Settings(workspace=Path(workspace), driver_memory="1g", shuffle_partitions=2)
        configure_driver_process(settings)
        spark = get_spark(settings)
        trips = synthetic_trips(spark, args.rows, YEAR, MONTH, args.seed, service="yellow")
        started = time.perf_counter()
        trips.write.format("noop").mode("overwrite").save()
        seconds = time.perf_counter() - started
        synthetic = synthetic_stats(trips, "yellow")
        green_trips = synthetic_trips(spark, args.rows // 2, YEAR, MONTH, args.seed, service="green")
        green = (synthetic_stats(green_trips, "green"), real_stats("green"))
        spark.stop()
    real = real_stats("yellow")
    print("yellow")
    print_table(("metric", "synthetic", "real", "synthetic / real"), comparison_rows(synthetic, real))
    print_table(
        ("hour", "synthetic", "real"),
        [
            (f"{h:02d}", f"{s:.3f}", f"{r:.3f}")
            for h, s, r in zip(range(24), synthetic.hourly, real.hourly, strict=True)
        ],
    )
    print_table(
        ("borough", "synthetic", "real"),
        [(b, f"{synthetic.borough[b]:.3f}", f"{real.borough[b]:.3f}") for b in BOROUGHS],
    )
    print("green")
    print_table(("metric", "synthetic", "real", "synthetic / real"), comparison_rows(*green))
    if not args.no_write:
        plot(synthetic, real, PLOT)
        write_doc(synthetic, real, green, args.rows, args.seed, seconds, DOC)
        print(f"wrote {DOC.relative_to(REPO)} and {PLOT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
