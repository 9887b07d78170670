"""How a micro-batch is committed: written aside, renamed into place in one step, then recorded.

A batch's output is staged under `staging/`, then its quarantine and its predictions folder are renamed into place
(the predictions folder appearing is what marks the batch as committed), then `commits/N.json` records what it
did. The records are files, not driver memory: through Spark Connect the batch runs in a worker of the server."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads

from taxi_duration.quality.rules import REASON


@dataclass
class BatchRecord:
    """What one committed micro-batch of the score query did (`commits/N.json`)."""

    batch_id: int
    committed_at: float  # epoch seconds, after the predictions folder was renamed into place
    started_at: float
    model_version: str
    files: int
    trips: int
    quarantined: int
    by_reason: dict[str, int]
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # where the batch's time went, by phase
    recovered: bool = False  # rebuilt from output committed just before a crash (not scored by this run)


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def append_json_line(path: Path, payload: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(payload, default=str) + "\n")


def publish(staged: Path, final: Path) -> None:
    """Make a fully written batch folder visible in one rename (same file system)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, final)


def written_counts(predictions: Path, quarantine: Path) -> tuple[int, dict[str, int]]:
    """Trips scored and rows quarantined by reason, read from the batch's staged output (Parquet footers and the
    reason column): what the commit record says is what was written, and no Spark job is spent counting."""
    trips = pads.dataset(predictions, format="parquet").count_rows()
    reasons = pads.dataset(quarantine, format="parquet").to_table(columns=[REASON]).column(REASON)
    counts = reasons.value_counts().to_pylist() if len(reasons) else []
    return trips, {str(item["values"]): int(item["counts"]) for item in sorted(counts, key=lambda i: i["values"])}
