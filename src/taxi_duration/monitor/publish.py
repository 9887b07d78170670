"""Where a monitor run goes once computed: an MLflow run in the monitoring experiment (metrics, the JSON summary and
the HTML report as artifacts), the latest report in `reports/`, and one Parquet part per table appended to
`monitoring/{runs,drift,profile,quality}` (written aside and renamed in, so readers see a run's rows or none)."""

from __future__ import annotations

import json
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from taxi_duration.monitor import report as html_report
from taxi_duration.monitor.drift import PERIOD, WINDOW_START
from taxi_duration.monitor.realized import ERROR_COLUMNS
from taxi_duration.monitor.result import MonitorResult

BOROUGH = "pickup_borough_name"


def _with_columns(frame: pd.DataFrame, values: dict[str, Any]) -> pd.DataFrame:
    copy = frame.copy()
    for name, value in values.items():
        copy[name] = value
    return copy


def monitoring_rows(result: MonitorResult, tables: dict[str, pd.DataFrame], run_id: str) -> dict[str, pd.DataFrame]:
    """The rows appended to `monitoring/{runs,drift,profile,quality}`, each stamped with the run and the time."""
    stamp = pd.Timestamp(datetime.now(UTC).replace(tzinfo=None))
    common = {
        "run_id": run_id,
        "monitored_at": stamp,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "window": result.window,
        "source": result.source,
    }
    runs = pd.DataFrame(
        [
            {
                **common,
                "current_from": result.current["from"],
                "current_to": result.current["to"],
                "reference_from": result.reference["from"],
                "reference_to": result.reference["to"],
                "alert": result.alert,
                "reasons": json.dumps(result.reasons),
                "rows_current": result.rows_current,
                "rows_reference": result.rows_reference,
                "prediction_psi": result.prediction_psi,
                "realized_rmsle": result.realized["rmsle"],
                "validation_rmsle": result.realized["reference_rmsle"],
                "drifted_features": ",".join(result.drifted_features),
            }
        ]
    )
    overall = _with_columns(tables["drift_overall"], {WINDOW_START: None})
    zero = pd.DataFrame(
        [
            {"feature": name, "psi": None, "js_distance": None, "drifted": False, WINDOW_START: None}
            for name in result.zero_variance_features
        ]
    )
    parts = [frame for frame in (overall, tables["drift_windows"], zero) if len(frame)]
    drift = pd.concat(parts, ignore_index=True)
    drift = _with_columns(drift, {"zero_variance": drift["feature"].isin(result.zero_variance_features), **common})
    errors = tables["errors"]
    profile = _with_columns(errors, common)[
        [
            "run_id",
            "monitored_at",
            "model_name",
            "model_version",
            "window",
            "source",
            PERIOD,
            WINDOW_START,
            BOROUGH,
            *ERROR_COLUMNS,
        ]
    ]
    # rolled-up columns are null in the cube's output; the grouping id says which
    profile = profile.assign(
        level=errors["grouping"].map({0: "window_borough", 1: "window", 2: "borough", 3: "period"})
    )
    quality = _with_columns(tables["quality"], common)
    return {"runs": runs, "drift": drift, "profile": profile, "quality": quality}


def _write_table_part(frame: pd.DataFrame, folder: Path, run_id: str) -> Path:
    """Append one Parquet file to a monitoring table: written aside, then renamed in, so a reader sees all of a
    run's rows or none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    target = folder / f"part-{run_id}.parquet"
    staged = folder / f".part-{run_id}.parquet.tmp"
    pq.write_table(table, staged, coerce_timestamps="us", allow_truncated_timestamps=True)
    staged.replace(target)
    return target


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable column types across runs (an all-null column would otherwise change type from run to run)."""
    typed = frame.copy()
    for column in typed.columns:
        if column in (WINDOW_START, "monitored_at"):
            typed[column] = pd.to_datetime(typed[column])
        elif column in ("psi", "js_distance", "share", *ERROR_COLUMNS) and column != "rows":
            typed[column] = pd.to_numeric(typed[column], errors="coerce").astype("float64")
        elif column in ("rows", "input_rows", "bins", "rows_current", "rows_reference"):
            typed[column] = pd.to_numeric(typed[column], errors="coerce").astype("Int64")
        elif column in ("prediction_psi", "realized_rmsle", "validation_rmsle"):
            typed[column] = pd.to_numeric(typed[column], errors="coerce").astype("float64")
        elif column in ("drifted", "zero_variance", "alert"):
            typed[column] = typed[column].astype(bool)
        elif typed[column].dtype == object:
            typed[column] = typed[column].map(lambda v: None if v is None or v is pd.NaT else str(v))
    return typed


def publish(
    result: MonitorResult,
    tables: dict[str, pd.DataFrame],
    *,
    monitoring_path: Path,
    reports_path: Path,
    experiment_id: str,
    psi_threshold: float,
) -> MonitorResult:
    """The MLflow run (metrics, decision, report), the HTML report, and the rows appended to the monitoring
    tables; returns the result with the run id and paths."""
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"monitor v{result.model_version} {result.current['from'][:10]}..{result.current['to'][:10]}",
    ) as run:
        run_id = run.info.run_id
        mlflow.set_tags(
            {
                "alert": str(result.alert).lower(),
                "model_name": result.model_name,
                "model_version": result.model_version,
                "source": result.source,
            }
        )
        mlflow.log_params(
            {
                "current_from": result.current["from"],
                "current_to": result.current["to"],
                "reference_from": result.reference["from"],
                "reference_to": result.reference["to"],
                "window": result.window,
            }
        )
        metrics = {
            "alert": float(result.alert),
            "rows_current": float(result.rows_current),
            "rows_reference": float(result.rows_reference),
            **{f"sample_fraction_{period}": value for period, value in result.sampled.items()},
            "drifted_features": float(len(result.drifted_features)),
            "prediction_psi": result.prediction_psi,
            "realized_rmsle": result.realized["rmsle"],
            "validation_rmsle": result.realized["reference_rmsle"],
            "realized_ratio": result.realized["ratio"],
            "realized_mae_minutes": result.realized["mae_minutes"],
            "realized_bias_minutes": result.realized["bias_minutes"],
            **{f"psi_{row['feature']}": row["psi"] for row in result.features},
            **{f"js_{row['feature']}": row["js_distance"] for row in result.features},
        }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))})
        report = html_report.render(
            result, tables, reports_path / "monitoring" / f"monitor-{run_id}.html", psi_threshold
        )
        latest = reports_path / "monitoring.html"
        latest.write_text(report.read_text(encoding="utf-8"), encoding="utf-8")
        result.run_id, result.report_path, result.monitoring_path = run_id, str(report), str(monitoring_path)
        with tempfile.TemporaryDirectory() as tmp:
            summary = Path(tmp) / "monitor.json"
            summary.write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
            mlflow.log_artifact(str(summary))
            mlflow.log_artifact(str(report))
        for name, frame in monitoring_rows(result, tables, run_id).items():
            _write_table_part(_typed(frame), monitoring_path / name, run_id)
    return result
