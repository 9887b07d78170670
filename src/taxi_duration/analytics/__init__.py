"""Analytics stage: trip statistics by borough, weekday/hour and zone pair, as tables and an HTML report."""

from taxi_duration.analytics.report import (
    build_report,
    busiest_zone_pairs,
    print_tables,
    register_views,
    render_html,
    trips_by_borough,
    trips_by_hour_weekday,
)

__all__ = [
    "build_report",
    "busiest_zone_pairs",
    "print_tables",
    "register_views",
    "render_html",
    "trips_by_borough",
    "trips_by_hour_weekday",
]
