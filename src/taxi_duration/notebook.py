"""What the notebooks in `notebooks/` call, so that each of their cells is a call or two into the package.

A notebook runs the same on Databricks and in Jupyter:
- `settings(workspace)`: the workspace given in the notebook, else the `workspace` widget (a Databricks job's
  parameter), else what the CLI would use (`TAXI_DURATION_WORKSPACE`, `.env`, `./workspace`).
- `session(settings)`: the runtime's `spark` where there is one (Databricks), else a session built as the CLI builds
  it (local Spark, a cluster or Spark Connect, from the same settings).
- `require(settings, ...)`: a workspace without what the notebook reads ends the notebook with one line saying what
  to run first (`NotReady`, shown by IPython without a stack trace), before Spark starts.
- The tables are pandas frames (they render in both), the charts matplotlib figures shown as PNG (`show`).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import pandas as pd

from taxi_duration.errors import TaxiDurationError
from taxi_duration.settings import Settings, get_settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from pyspark.sql import SparkSession

    from taxi_duration.score.job import ScoreResult
    from taxi_duration.train.job import TrainResult

Need = Literal["trips", "champion", "monitoring"]
WORKSPACE_WIDGET = "workspace"
MONITORING_TABLES = ("runs", "drift", "profile", "quality")


class NotReady(TaxiDurationError):
    """The workspace lacks what a notebook reads; the message says what to run first."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of the stack trace
        return [f"NotReady: {self}"]


def _ipython_global(name: str) -> Any:
    """A name the notebook's runtime defines (Databricks: `spark`, `dbutils`); None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.user_ns.get(name)


def _widget(name: str) -> str | None:
    dbutils = _ipython_global("dbutils")
    if dbutils is None:
        return None
    try:
        value = dbutils.widgets.get(name)
    except Exception:  # no such widget: the notebook was opened, not run as a job task
        return None
    return str(value) or None


def settings(workspace: str | Path | None = None, **overrides: Any) -> Settings:
    """The notebook's settings: `workspace` if given, else the `workspace` widget, else the CLI's default."""
    chosen = workspace or _widget(WORKSPACE_WIDGET)
    if chosen:
        overrides["workspace"] = Path(chosen)
    return get_settings(**overrides)


def session(settings: Settings) -> SparkSession:
    """The runtime's session (Databricks defines `spark`), else one built from the settings as the CLI builds it."""
    from taxi_duration.spark import configure_driver_process, get_spark

    configure_driver_process(settings)  # this kernel is the driver: TZ as the session's (see the function)
    # cells show results; MLflow's progress lines (model copies, "Created version") are for the CLI's log. After
    # importing mlflow, which sets its loggers' level when first imported.
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    existing = _ipython_global("spark")
    return existing if existing is not None else get_spark(settings, app_name="taxi-duration-notebook")


def _has_files(folder: Path, pattern: str = "*.parquet") -> bool:
    return folder.is_dir() and any(folder.rglob(pattern))


def _champion_alias(settings: Settings) -> str:
    from taxi_duration.params import load_params

    return str(load_params(settings.config).registry.champion_alias)


def _champion_version(settings: Settings) -> str | None:
    from mlflow.tracking import MlflowClient

    from taxi_duration.registry.promotion import alias_version
    from taxi_duration.tracking import configure_mlflow

    if settings.tracking_uri is None and not (settings.workspace / "mlflow.db").exists():
        return None  # no local store yet: nothing was trained here (and opening one would create it)
    configure_mlflow(settings)
    return alias_version(MlflowClient(), settings.model_name, _champion_alias(settings))


def require(settings: Settings, *needs: Need) -> None:
    """Raise NotReady naming the first command to run if the workspace lacks one of `needs`."""
    from taxi_duration.lakehouse import latest_snapshot

    where = settings.workspace
    cli = f"taxi-duration --workspace {where}"
    for need in needs:
        if need == "trips" and latest_snapshot(settings.lakehouse) is None:
            raise NotReady(f"{where}: no trips ingested yet; run `{cli} ingest FILE...` (or `make demo`) first")
        if need == "champion" and _champion_version(settings) is None:
            alias = f"{settings.model_name}@{_champion_alias(settings)}"
            raise NotReady(f"{where}: no model {alias} yet; run `{cli} train` first")
        if need == "monitoring" and not _has_files(settings.lakehouse / "monitoring" / "runs"):
            raise NotReady(f"{where}: no monitoring runs yet; run `{cli} monitor --from DATE --to DATE` first")


def show(*figures: Figure | None) -> None:
    """Display matplotlib figures inline as PNG (Jupyter and Databricks notebooks alike); None is skipped."""
    from IPython.display import Image, display
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for figure in figures:
        if figure is None:
            continue
        FigureCanvasAgg(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        display(Image(data=buffer.getvalue(), format="png"))


# ------------------------------------------------------------------------------------------ trips and quality


def quality_tables(settings: Settings) -> dict[str, pd.DataFrame]:
    """The last ingest's quality report: rows per file, and quarantined rows per reason with what it means."""
    from taxi_duration.lakehouse import committed_quality_report
    from taxi_duration.quality.rules import REASONS

    report = committed_quality_report(settings.lakehouse) or {"files": [], "by_reason": {}, "rows_in": 0}
    files = pd.DataFrame(report["files"], columns=["path", "format", "rows_in", "rows_clean", "rows_quarantined"])
    files["path"] = files["path"].map(lambda path: Path(str(path)).name)
    reasons = pd.DataFrame(
        [
            (reason, count, count / report["rows_in"] if report["rows_in"] else 0.0, REASONS.get(reason, ""))
            for reason, count in sorted(report["by_reason"].items(), key=lambda item: -item[1])
        ],
        columns=["reason", "rows", "share_of_input", "meaning"],
    )
    return {"files": files, "reasons": reasons}


def trip_report(spark: SparkSession, settings: Settings, limit: int = 20) -> dict[str, pd.DataFrame]:
    """The `report` command's tables (by borough, by weekday and hour, busiest zone pairs) over the trips table."""
    from taxi_duration.analytics.report import build_report, register_views
    from taxi_duration.lakehouse import read_trips
    from taxi_duration.zones import zones_frame

    register_views(read_trips(spark, settings.trips_path), zones_frame(spark))
    return build_report(spark, limit)


def trip_charts(report: dict[str, pd.DataFrame]) -> list[Figure]:
    """The HTML report's charts for `trip_report`'s tables."""
    from taxi_duration.analytics.report import report_charts

    return report_charts(report)


# ------------------------------------------------------------------------------------------ training and runs


def train(spark: SparkSession, settings: Settings, kind: str | None = None) -> TrainResult:
    """`taxi-duration train [--model KIND]`: fit, log, register, and promote if better than the champion."""
    from taxi_duration.errors import ConfigError
    from taxi_duration.lakehouse import read_trips
    from taxi_duration.params import ModelKind, load_params
    from taxi_duration.tracking import configure_mlflow
    from taxi_duration.train.job import run_train

    params = load_params(settings.config)
    chosen = kind or params.train.model
    kinds = get_args(ModelKind)
    if chosen not in kinds:
        raise ConfigError(f"kind: expected one of {', '.join(kinds)}, found '{chosen}'")
    return run_train(
        read_trips(spark, settings.trips_path),
        kind=chosen,  # type: ignore[arg-type]
        params=params,
        tune=False,
        model_name=settings.model_name,
        experiment_id=configure_mlflow(settings),
        data_info={"trips_path": str(settings.trips_path)},
    )


def training_runs(settings: Settings, max_runs: int = 100) -> pd.DataFrame:
    """The training runs of the experiment, newest first: kind, registered version, validation RMSLE against the
    zone-pair baseline's, and the RMSLE of each prediction regime."""
    import mlflow

    from taxi_duration.regimes import REGIMES
    from taxi_duration.tracking import configure_mlflow

    found = mlflow.search_runs(
        experiment_ids=[configure_mlflow(settings)], max_results=max_runs, order_by=["attributes.start_time DESC"]
    )
    assert isinstance(found, pd.DataFrame)
    columns = {
        "run_id": "run_id",
        "start_time": "start_time",
        "tags.model_kind": "kind",
        "metrics.rmsle": "rmsle",
        "metrics.baseline_rmsle": "baseline_rmsle",
        **{f"metrics.{regime}_rmsle": f"{regime}_rmsle" for regime in REGIMES},
    }
    runs = found.reindex(columns=list(columns)).rename(columns=columns)
    return runs[runs["rmsle"].notna()].reset_index(drop=True)


def regime_chart(runs: pd.DataFrame, limit: int = 6) -> Figure:
    """RMSLE per prediction regime for the newest `limit` runs (lower is better)."""
    from matplotlib.figure import Figure

    from taxi_duration.regimes import REGIMES

    shown = runs.head(limit)
    regimes = [regime for regime in REGIMES if f"{regime}_rmsle" in shown and shown[f"{regime}_rmsle"].notna().any()]
    figure = Figure(figsize=(9, 3.6))
    ax = figure.subplots()
    width = 0.8 / max(len(shown), 1)
    for i, run in enumerate(shown.itertuples(index=False)):
        values = [float(getattr(run, f"{regime}_rmsle")) for regime in regimes]
        positions = [r + i * width for r in range(len(regimes))]
        ax.bar(positions, values, width, label=f"{run.kind} {str(run.run_id)[:8]}")
    ax.set_xticks([r + width * (len(shown) - 1) / 2 for r in range(len(regimes))], regimes)
    ax.set_ylabel("validation RMSLE")
    ax.set_title("RMSLE by prediction regime, newest runs")
    ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------------ scoring


def score(spark: SparkSession, settings: Settings, alias: str | None = None) -> ScoreResult:
    """`taxi-duration score`: every trip scored by the aliased model (default the champion), overwriting
    `lakehouse/predictions`."""
    from taxi_duration.lakehouse import read_trips
    from taxi_duration.score.job import run_score

    trips = read_trips(spark, settings.trips_path)
    return run_score(trips, settings.model_name, alias or _champion_alias(settings), settings.predictions_path)


def prediction_errors(spark: SparkSession, settings: Settings) -> pd.DataFrame:
    """Predicted against actual minutes per pickup borough and regime: trips, mean of each, MAE, RMSLE."""
    from pyspark.sql import functions as F

    from taxi_duration.regimes import REGIME_SQL
    from taxi_duration.zones import zones_frame

    predictions = spark.read.parquet(str(settings.predictions_path))
    zones = zones_frame(spark).select(
        F.col("location_id").alias("pickup_location_id"), F.col("borough").alias("pickup_borough")
    )
    log_error = F.log1p("predicted_duration_minutes") - F.log1p("actual_duration_minutes")
    table = (
        predictions.join(zones, "pickup_location_id", "left")
        .withColumn("regime", F.expr(REGIME_SQL))
        .groupBy("pickup_borough", "regime")
        .agg(
            F.count(F.lit(1)).alias("trips"),
            F.avg("actual_duration_minutes").alias("mean_actual_minutes"),
            F.avg("predicted_duration_minutes").alias("mean_predicted_minutes"),
            F.avg(F.abs(F.col("predicted_duration_minutes") - F.col("actual_duration_minutes"))).alias("mae_minutes"),
            F.sqrt(F.avg(log_error * log_error)).alias("rmsle"),
        )
        .orderBy(F.desc("trips"), "pickup_borough", "regime")
    )
    return table.toPandas()


def prediction_sample(spark: SparkSession, settings: Settings, rows: int = 2000, seed: int = 7) -> pd.DataFrame:
    """About `rows` predictions chosen by trip id (the same ones on every run) with their actual minutes."""
    from pyspark.sql import functions as F

    predictions = spark.read.parquet(str(settings.predictions_path))
    total = predictions.count()
    fraction = min(1.0, rows / total) if total else 1.0
    sampled = predictions.filter(F.rand(seed) < fraction) if fraction < 1.0 else predictions
    return sampled.orderBy("trip_id").limit(rows).toPandas()


def predicted_vs_actual_chart(sample: pd.DataFrame) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5))
    ax = figure.subplots()
    known = sample.dropna(subset=["actual_duration_minutes"])
    ax.scatter(known["actual_duration_minutes"], known["predicted_duration_minutes"], s=4, alpha=0.4)
    top = max(float(known["actual_duration_minutes"].quantile(0.99)), 1.0) if len(known) else 60.0
    ax.plot([0, top], [0, top], color="#d9822b", linewidth=1)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("actual minutes")
    ax.set_ylabel("predicted minutes")
    ax.set_title(f"Predicted against actual ({len(known):,} trips)")
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------------ monitoring


def monitoring_tables(settings: Settings) -> dict[str, pd.DataFrame]:
    """`lakehouse/monitoring/{runs,drift,profile,quality}` as pandas frames (empty where nothing was written)."""
    root = settings.lakehouse / "monitoring"
    tables = {}
    for name in MONITORING_TABLES:
        parts = sorted((root / name).glob("*.parquet"))
        tables[name] = (
            pd.concat([pd.read_parquet(part) for part in parts], ignore_index=True) if parts else (pd.DataFrame())
        )
    if not tables["runs"].empty:
        tables["runs"] = tables["runs"].sort_values("monitored_at", ascending=False, ignore_index=True)
    return tables


def latest_alert(runs: pd.DataFrame) -> dict[str, Any]:
    """The newest monitor run's decision: alert, reasons, windows, realised against validation RMSLE."""
    latest = runs.iloc[0]
    return {
        "alert": bool(latest["alert"]),
        "reasons": json.loads(latest["reasons"]) if latest["reasons"] else [],
        "model": f"{latest['model_name']} v{latest['model_version']}",
        "current": f"{latest['current_from']} .. {latest['current_to']}",
        "reference": f"{latest['reference_from']} .. {latest['reference_to']}",
        "realized_rmsle": float(latest["realized_rmsle"]),
        "validation_rmsle": None if pd.isna(latest["validation_rmsle"]) else float(latest["validation_rmsle"]),
        "prediction_psi": float(latest["prediction_psi"]),
        "drifted_features": [name for name in str(latest["drifted_features"] or "").split(",") if name],
        "run_id": str(latest["run_id"]),
    }


def drift_table(tables: dict[str, pd.DataFrame], run_id: str) -> pd.DataFrame:
    """Drift per feature over the whole window of one monitor run, most drifted first."""
    drift = tables["drift"]
    whole = drift[(drift["run_id"] == run_id) & drift["window_start"].isna()]
    return whole.drop(columns=["window_start"]).sort_values("psi", ascending=False, ignore_index=True)


def realized_error_chart(tables: dict[str, pd.DataFrame], alert: dict[str, Any]) -> Figure | None:
    """The monitoring report's chart of one run: realised RMSLE (against the validation RMSLE), MAE and bias per
    window of the current period; None if the run has no window rows."""
    from taxi_duration.monitor.report import error_chart

    profile = tables["profile"]
    windows = profile[(profile["run_id"] == alert["run_id"]) & (profile["level"] == "window")]
    return error_chart(windows.assign(grouping=1), alert["validation_rmsle"])
