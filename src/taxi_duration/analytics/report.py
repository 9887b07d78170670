"""Trip analytics in Spark SQL over the `trips` and `zones` views, rendered as HTML or rich tables."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pyspark.sql import DataFrame, SparkSession
from rich.console import Console
from rich.table import Table

from taxi_duration.errors import ConfigError
from taxi_duration.zones import UNKNOWN_ZONE_IDS

TRIPS_VIEW = "trips"
ZONES_VIEW = "zones"
UNKNOWN_BOROUGH = "Unknown"
MISSING = "-"  # shown for a null statistic (e.g. no known durations in a group)
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# percentile_approx accuracy: relative rank error 1/10000, exact on small groups
MEDIAN_ACCURACY = 10000

TABLE_TITLES = {
    "by_borough": "Trips by pickup borough",
    "by_hour_weekday": "Trips by pickup weekday and hour",
    "zone_pairs": "Busiest zone pairs",
}
COLUMN_LABELS = {
    "pickup_borough": "Pickup borough",
    "trips": "Trips",
    "mean_duration_min": "Mean min",
    "median_duration_min": "Median min",
    "share_of_trips": "Share",
    "pickup_weekday": "Weekday #",
    "weekday_name": "Weekday",
    "pickup_hour": "Hour",
    "pickup_location_id": "PU id",
    "pickup_zone": "Pickup zone",
    "dropoff_location_id": "DO id",
    "dropoff_zone": "Dropoff zone",
    "dropoff_borough": "Dropoff borough",
}

# Zones usable as a location: 264/265 ("Unknown"/"NA") have no geometry and count as unknown.
_KNOWN_ZONES_CTE = f"""
known_zones AS (
    SELECT location_id, borough, zone
    FROM {ZONES_VIEW}
    WHERE location_id NOT IN ({", ".join(str(i) for i in UNKNOWN_ZONE_IDS)})
)"""

_DURATION_STATS = f"""
    count(*) AS trips,
    avg(duration_min) AS mean_duration_min,
    percentile_approx(duration_min, 0.5, {MEDIAN_ACCURACY}) AS median_duration_min"""


def register_views(trips: DataFrame, zones: DataFrame) -> None:
    """Register the canonical trips and the zone table as the temp views `trips` and `zones`."""
    trips.createOrReplaceTempView(TRIPS_VIEW)
    zones.createOrReplaceTempView(ZONES_VIEW)


def trips_by_borough(spark: SparkSession) -> DataFrame:
    """Trips, mean/median minutes and share of all trips per pickup borough (unknown zones as 'Unknown')."""
    return spark.sql(
        f"""
        WITH {_KNOWN_ZONES_CTE},
        per_trip AS (
            SELECT /*+ BROADCAST(z) */ coalesce(z.borough, '{UNKNOWN_BOROUGH}') AS pickup_borough,
                   t.duration_s / 60 AS duration_min
            FROM {TRIPS_VIEW} AS t
            LEFT JOIN known_zones AS z ON t.pickup_location_id = z.location_id
        )
        SELECT pickup_borough,
               {_DURATION_STATS},
               -- a window over the few grouped rows, not a second scan of the trips for their count
               count(*) / sum(count(*)) OVER () AS share_of_trips
        FROM per_trip
        GROUP BY pickup_borough
        ORDER BY trips DESC, pickup_borough
        """
    )


def trips_by_hour_weekday(spark: SparkSession) -> DataFrame:
    """Trips and mean/median minutes per pickup weekday (1=Monday..7=Sunday) and hour (session time)."""
    names = ", ".join(f"'{name}'" for name in WEEKDAY_NAMES)
    return spark.sql(
        f"""
        WITH per_trip AS (
            SELECT weekday(pickup_datetime) + 1 AS pickup_weekday,
                   hour(pickup_datetime) AS pickup_hour,
                   duration_s / 60 AS duration_min
            FROM {TRIPS_VIEW}
            WHERE pickup_datetime IS NOT NULL
        )
        SELECT pickup_weekday,
               element_at(array({names}), pickup_weekday) AS weekday_name,
               pickup_hour,
               {_DURATION_STATS}
        FROM per_trip
        GROUP BY pickup_weekday, pickup_hour
        ORDER BY pickup_weekday, pickup_hour
        """
    )


def busiest_zone_pairs(spark: SparkSession, limit: int = 20) -> DataFrame:
    """The `limit` pickup/dropoff zone pairs with most trips (both zones known), with mean/median minutes."""
    if limit < 1:
        raise ConfigError(f"zone pair limit must be at least 1, got {limit}")
    return spark.sql(
        f"""
        WITH {_KNOWN_ZONES_CTE},
        pairs AS (
            SELECT pickup_location_id, dropoff_location_id, {_DURATION_STATS}
            FROM (
                SELECT pickup_location_id, dropoff_location_id, duration_s / 60 AS duration_min
                FROM {TRIPS_VIEW}
            )
            GROUP BY pickup_location_id, dropoff_location_id
        )
        SELECT /*+ BROADCAST(pz, dz) */ p.pickup_location_id,
               pz.zone AS pickup_zone,
               pz.borough AS pickup_borough,
               p.dropoff_location_id,
               dz.zone AS dropoff_zone,
               dz.borough AS dropoff_borough,
               p.trips,
               p.mean_duration_min,
               p.median_duration_min
        FROM pairs AS p
        JOIN known_zones AS pz ON p.pickup_location_id = pz.location_id
        JOIN known_zones AS dz ON p.dropoff_location_id = dz.location_id
        ORDER BY p.trips DESC, p.pickup_location_id, p.dropoff_location_id
        """
    ).limit(limit)


def build_report(spark: SparkSession, limit: int = 20) -> dict[str, pd.DataFrame]:
    """Run the three analytics queries over the registered views and collect their (small) results."""
    return {
        "by_borough": trips_by_borough(spark).toPandas(),
        "by_hour_weekday": trips_by_hour_weekday(spark).toPandas(),
        "zone_pairs": busiest_zone_pairs(spark, limit).toPandas(),
    }


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt_count(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{int(value):,}"


def _fmt_minutes(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{float(value):.1f}"


def _fmt_share(value: Any) -> str:
    return MISSING if _is_missing(value) else f"{100 * float(value):.1f}%"


def _fmt_plain(value: Any) -> str:
    return MISSING if _is_missing(value) else str(value)


_FORMATTERS: dict[str, Callable[[Any], str]] = {
    "trips": _fmt_count,
    "mean_duration_min": _fmt_minutes,
    "median_duration_min": _fmt_minutes,
    "share_of_trips": _fmt_share,
}


def _display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as strings for people: counts with separators, minutes to 0.1, shares as percent."""
    shown = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        formatter = _FORMATTERS.get(str(column), _fmt_plain)
        shown[COLUMN_LABELS.get(str(column), str(column))] = [formatter(v) for v in frame[column].tolist()]
    return shown


def _png_data_uri(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _borough_chart(by_borough: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(10, 3.8))
    trips_ax, median_ax = figure.subplots(1, 2)
    boroughs = [str(b) for b in by_borough["pickup_borough"]]
    trips_ax.bar(boroughs, by_borough["trips"].astype(float), color="#3b6ea8")
    trips_ax.set_title("Trips by pickup borough")
    trips_ax.set_ylabel("trips")
    median_ax.bar(boroughs, by_borough["median_duration_min"].astype(float), color="#d9822b")
    median_ax.set_title("Median duration by pickup borough")
    median_ax.set_ylabel("minutes")
    for ax in (trips_ax, median_ax):
        ax.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    return figure


def _weekday_hour_grid(by_hour_weekday: pd.DataFrame, column: str) -> np.ndarray:
    grid = np.full((7, 24), np.nan)
    for weekday, hour, value in zip(
        by_hour_weekday["pickup_weekday"],
        by_hour_weekday["pickup_hour"],
        by_hour_weekday[column],
        strict=True,
    ):
        if not _is_missing(value):
            grid[int(weekday) - 1, int(hour)] = float(value)
    return grid


def _heatmap_chart(by_hour_weekday: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(10, 3.6))
    ax = figure.subplots()
    grid = np.ma.masked_invalid(_weekday_hour_grid(by_hour_weekday, "median_duration_min"))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(7), [name[:3] for name in WEEKDAY_NAMES])
    ax.set_xticks(range(24))
    ax.set_xlabel("pickup hour")
    ax.set_title("Median duration (minutes) by weekday and hour")
    figure.colorbar(image, ax=ax, label="minutes")
    figure.tight_layout()
    return figure


def _hourly_trips_chart(by_hour_weekday: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(10, 3.2))
    ax = figure.subplots()
    hourly = by_hour_weekday.groupby("pickup_hour")["trips"].sum().reindex(range(24), fill_value=0)
    ax.plot(list(hourly.index), list(hourly.astype(float)), marker="o", color="#3b6ea8")
    ax.set_xticks(range(24))
    ax.set_xlabel("pickup hour")
    ax.set_ylabel("trips")
    ax.set_title("Trips by pickup hour (all weekdays)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def report_charts(tables: Mapping[str, pd.DataFrame]) -> list[Figure]:
    """The report's charts (trips and median by borough, median by weekday and hour, trips by hour) as figures, for
    the tables that have rows: what the HTML report shows, for a notebook."""
    charts = []
    by_borough = tables.get("by_borough")
    if by_borough is not None and not by_borough.empty:
        charts.append(_borough_chart(by_borough))
    by_hour_weekday = tables.get("by_hour_weekday")
    if by_hour_weekday is not None and not by_hour_weekday.empty:
        charts += [_heatmap_chart(by_hour_weekday), _hourly_trips_chart(by_hour_weekday)]
    return charts


def _img(figure: Figure, alt: str) -> str:
    return f'<img src="{_png_data_uri(figure)}" alt="{html.escape(alt)}">'


def _table_html(frame: pd.DataFrame) -> str:
    if frame.empty:
        return '<p class="empty">No trips.</p>'
    return _display_frame(frame).to_html(index=False, border=0, classes="data", escape=True)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } p.subtitle { color: #666; margin-top: 0; }
section { margin: 2rem 0; } img { max-width: 100%; display: block; margin: 0.5rem 0; }
table.data { border-collapse: collapse; font-size: 0.9rem; }
table.data th, table.data td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; }
table.data th { background: #f3f3f3; }
p.empty { color: #999; font-style: italic; }
"""


def render_html(tables: dict[str, pd.DataFrame], path: Path, title: str, subtitle: str = "") -> Path:
    """Write a self-contained HTML report (inline PNG charts and the tables) to `path` and return it."""
    sections: list[str] = []
    by_borough = tables.get("by_borough")
    if by_borough is not None:
        chart = "" if by_borough.empty else _img(_borough_chart(by_borough), "trips and median by borough")
        sections.append(f"<section><h2>{TABLE_TITLES['by_borough']}</h2>{chart}{_table_html(by_borough)}</section>")
    by_hour_weekday = tables.get("by_hour_weekday")
    if by_hour_weekday is not None:
        charts = (
            ""
            if by_hour_weekday.empty
            else _img(_heatmap_chart(by_hour_weekday), "median duration by weekday and hour")
            + _img(_hourly_trips_chart(by_hour_weekday), "trips by hour")
        )
        table = _table_html(by_hour_weekday)
        if not by_hour_weekday.empty:
            table = f"<details><summary>Table ({len(by_hour_weekday)} rows)</summary>{table}</details>"
        sections.append(f"<section><h2>{TABLE_TITLES['by_hour_weekday']}</h2>{charts}{table}</section>")
    zone_pairs = tables.get("zone_pairs")
    if zone_pairs is not None:
        sections.append(f"<section><h2>{TABLE_TITLES['zone_pairs']}</h2>{_table_html(zone_pairs)}</section>")
    subtitle_html = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    document = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>{subtitle_html}\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


def print_tables(tables: Mapping[str, pd.DataFrame], console: Console) -> None:
    """Print each report table as a rich table with rounded numbers."""
    for name, frame in tables.items():
        shown = _display_frame(frame)
        table = Table(title=TABLE_TITLES.get(name, name), title_justify="left")
        for source, label in zip(frame.columns, shown.columns, strict=True):
            numeric = pd.api.types.is_numeric_dtype(frame[source])
            table.add_column(str(label), justify="right" if numeric else "left", no_wrap=numeric)
        for row in shown.itertuples(index=False):
            table.add_row(*[str(value) for value in row])
        if frame.empty:
            console.print(f"[bold]{TABLE_TITLES.get(name, name)}[/bold]: no trips")
        else:
            console.print(table)
