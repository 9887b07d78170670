"""What `monitor` is asked (`MonitorRequest`) and what it answers (`MonitorResult`, the `--json` line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class MonitorResult:
    alert: bool
    reasons: list[str]
    rows_current: int
    rows_reference: int
    drifted_features: list[str]
    prediction_psi: float | None
    prediction_js: float | None
    realized: dict[str, float | None]
    model_name: str
    model_version: str
    current: dict[str, str]
    reference: dict[str, str]
    window: str
    source: str
    zero_variance_features: list[str]
    features: list[dict[str, Any]]
    quality: list[dict[str, Any]]
    predictions_reused: int
    predictions_scored: int
    # the share of each period's trips the statistics read (1.0: all; below it beyond `monitor.max_trips`)
    sampled: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    report_path: str | None = None
    monitoring_path: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MonitorRequest:
    current: tuple[datetime, datetime]
    reference_from: datetime | None = None
    reference_to: datetime | None = None
    window: str = "week"
    source: str = "trips"  # or "stream"
