"""The travel-time table: per pickup/dropoff zone pair, how many training trips, their median recorded distance
and their median duration, with fallbacks for pairs seen too rarely (per borough pair, then overall).

It is the offline/online feature table of the model: `train` computes it with Spark from the training trips only
(`train.travel_times.travel_times_with_out_of_fold`, nothing after the validation cutoff), logs it with the run
(`travel_times.json`), and embeds it in the model's feature SQL as JSON literals, so Spark scoring, the stream and
the JVM-free API (`serve.online_features`) read the same numbers. Pure Python: the API imports it.

Lookup rule, the same in SQL and NumPy: the pair's row if the pair had at least `min_trips` training trips, else
the borough pair's, else the overall one. `pair_trips` is the pair's count (0 when it fell back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# one row: (training trips, median recorded miles, median minutes)
Stats = tuple[float, float, float]
PAIR_KEY_FACTOR = 1000  # key = pickup zone * 1000 + dropoff zone (zone ids are below 1000; boroughs below 10)
BOROUGH_SLOTS = 10  # borough codes are 0..9
FORMAT = "taxi-duration-travel-times"


def pair_key(pickup: int, dropoff: int) -> int:
    return pickup * PAIR_KEY_FACTOR + dropoff


@dataclass(frozen=True)
class TravelTimes:
    """Medians from training trips: `pairs` by zone pair key, `boroughs` by borough pair key, and `overall`."""

    min_trips: int
    pairs: dict[int, Stats] = field(default_factory=dict)
    boroughs: dict[int, Stats] = field(default_factory=dict)
    overall: Stats = (0.0, float("nan"), float("nan"))
    source: dict[str, Any] = field(default_factory=dict, compare=False)  # what it was built from (dates, rows)

    def lookup(
        self, pickup: int | None, dropoff: int | None, pickup_borough: int, dropoff_borough: int
    ) -> tuple[Stats | None, Stats]:
        """(the pair's own row or None, the row after the fallbacks): each field falls back on its own, as the SQL
        `COALESCE(pair[i], borough[i], overall[i])` does; the pair count is 0 when the pair has no row."""
        pair = self.pairs.get(pair_key(pickup, dropoff)) if pickup is not None and dropoff is not None else None
        borough = self.boroughs.get(pair_key(pickup_borough, dropoff_borough))
        trips = pair[0] if pair is not None else 0.0
        miles, minutes = (
            _first_number(
                pair[i] if pair is not None else None, borough[i] if borough is not None else None, self.overall[i]
            )
            for i in (1, 2)
        )
        return pair, (trips, miles, minutes)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "min_trips": self.min_trips,
            "overall": _nulls(self.overall),
            "boroughs": {str(k): _nulls(v) for k, v in sorted(self.boroughs.items())},
            "pairs": {str(k): _nulls(v) for k, v in sorted(self.pairs.items())},
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TravelTimes:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a travel-time table (format {data.get('format')!r}, expected {FORMAT!r})")

        return cls(
            min_trips=int(data["min_trips"]),
            pairs={int(k): _row(v) for k, v in data["pairs"].items()},
            boroughs={int(k): _row(v) for k, v in data["boroughs"].items()},
            overall=_row(data["overall"]),
            source=dict(data.get("source") or {}),
        )

    def literal_json(self, zone_slots: int) -> str:
        """The table as the feature SQL embeds it, as arrays read by position (a Spark map is searched key by key:
        a pair lookup in a map of 26,000 pairs cost more than every other feature together):
        `pair_index[pickup * zone_slots + dropoff]` is the pair's row in `pair_rows` (-1: none),
        `boroughs[pickup_borough * BOROUGH_SLOTS + dropoff_borough]` the borough pair's row (null: none).
        Doubles are written with repr (read back exactly), NaN as null (a SQL NULL, so COALESCE falls through
        to the next level); `min_trips` and `zone_slots` are not in the SQL type (from_json skips them): the
        exporter reads them back (`from_literal`)."""
        index = [-1] * (zone_slots * zone_slots)
        rows: list[list[float | None]] = []
        for key, stats in sorted(self.pairs.items()):
            pickup, dropoff = divmod(key, PAIR_KEY_FACTOR)
            if not (0 <= pickup < zone_slots and 0 <= dropoff < zone_slots):
                raise ValueError(f"travel-time pair {key}: a zone id outside 0..{zone_slots - 1}")
            index[pickup * zone_slots + dropoff] = len(rows)
            rows.append(_nulls(stats))
        boroughs: list[list[float | None] | None] = [None] * (BOROUGH_SLOTS * BOROUGH_SLOTS)
        for key, stats in self.boroughs.items():
            pickup, dropoff = divmod(key, PAIR_KEY_FACTOR)
            if not (0 <= pickup < BOROUGH_SLOTS and 0 <= dropoff < BOROUGH_SLOTS):
                raise ValueError(f"travel-time borough pair {key}: a borough code outside 0..{BOROUGH_SLOTS - 1}")
            boroughs[pickup * BOROUGH_SLOTS + dropoff] = _nulls(stats)
        document = {
            "pair_index": index,
            "pair_rows": rows,
            "boroughs": boroughs,
            "overall": _nulls(self.overall),
            "min_trips": self.min_trips,
            "zone_slots": zone_slots,
        }
        return json.dumps(document, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_literal(cls, data: Mapping[str, Any]) -> TravelTimes:
        """The table back from `literal_json`'s document."""
        slots = int(data["zone_slots"])

        rows = data["pair_rows"]
        pairs = {
            pair_key(*divmod(position, slots)): _row(rows[at])
            for position, at in enumerate(data["pair_index"])
            if at >= 0
        }
        boroughs = {
            pair_key(*divmod(position, BOROUGH_SLOTS)): _row(values)
            for position, values in enumerate(data["boroughs"])
            if values is not None
        }
        return cls(min_trips=int(data["min_trips"]), pairs=pairs, boroughs=boroughs, overall=_row(data["overall"]))


def _row(values: Any) -> Stats:
    a, b, c = (float("nan") if v is None else float(v) for v in values)
    return (a, b, c)


def _nulls(row: Stats) -> list[float | None]:
    return [None if value != value else value for value in row]


def _first_number(*values: float | None) -> float:
    """The first value that is neither None nor NaN (SQL COALESCE over nullable doubles); NaN if none."""
    for value in values:
        if value is not None and value == value:
            return value
    return float("nan")
