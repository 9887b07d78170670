"""The monitoring report: one self-contained HTML page (inline PNG charts): the decision, realised error and
drift over time, the drifted features' distributions side by side, errors by borough and quality drift."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from taxi_duration.analytics.report import _CSS, _img
from taxi_duration.monitor.drift import CURRENT, PERIOD, REFERENCE, WINDOW_START, shares

if TYPE_CHECKING:
    from taxi_duration.monitor.result import MonitorResult

MAX_DISTRIBUTIONS = 6
PREDICTED = "predicted_duration_minutes"
ACTUAL = "actual_duration_minutes"


def _window_axis(ax: Any, starts: pd.Series) -> None:
    """A monitor run with a single window: a week either side of it, not the years matplotlib spans for one date."""
    if starts.nunique() == 1:
        ax.set_xlim(starts.iloc[0] - pd.Timedelta(days=7), starts.iloc[0] + pd.Timedelta(days=7))


def error_chart(errors: pd.DataFrame, validation: float | None) -> Figure | None:
    """Realised RMSLE, MAE and bias per window of the current period (`grouping` 1: the per-window rows)."""
    series = errors[(errors[PERIOD] == CURRENT) & (errors["grouping"] == 1)].sort_values(WINDOW_START)
    if series.empty:
        return None
    figure = Figure(figsize=(10, 3.4))
    rmsle_ax, minutes_ax = figure.subplots(1, 2)
    x = pd.to_datetime(series[WINDOW_START])
    rmsle_ax.plot(x, series["rmsle"].astype(float), marker="o", color="#3b6ea8", label="realised RMSLE")
    if validation:
        rmsle_ax.axhline(validation, color="#999", linestyle="--", label="validation RMSLE")
    rmsle_ax.set_title("Realised RMSLE per window")
    rmsle_ax.legend()
    minutes_ax.plot(x, series["mae_minutes"].astype(float), marker="o", label="MAE (min)", color="#d9822b")
    minutes_ax.plot(x, series["bias_minutes"].astype(float), marker="s", label="bias (min)", color="#6a994e")
    minutes_ax.axhline(0, color="#999", linewidth=0.8)
    minutes_ax.set_title("MAE and bias per window")
    minutes_ax.legend()
    for ax in (rmsle_ax, minutes_ax):
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3)
        _window_axis(ax, x)
    figure.tight_layout()
    return figure


def _drift_chart(per_window: pd.DataFrame, names: list[str], threshold: float) -> Figure | None:
    if per_window.empty:
        return None
    figure = Figure(figsize=(10, 3.4))
    ax = figure.subplots()
    for name in names:
        rows = per_window[per_window["feature"] == name].sort_values(WINDOW_START)
        if not rows.empty:
            ax.plot(pd.to_datetime(rows[WINDOW_START]), rows["psi"].astype(float), marker="o", label=name)
    ax.axhline(threshold, color="#b00", linestyle="--", label="PSI threshold")
    ax.set_title("PSI per window against the reference")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.tick_params(axis="x", labelrotation=30)
    _window_axis(ax, pd.to_datetime(per_window[WINDOW_START]))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _bin_labels(feature: str, bins: list[int], edges: dict[str, list[float]]) -> list[str]:
    cuts = edges.get(feature)
    if cuts is None:
        return ["null" if b < 0 else str(b) for b in bins]
    labels = []
    for b in bins:
        if b < 0:
            labels.append("null")
        elif b == 0:
            labels.append(f"<={cuts[0]:.3g}")
        elif b >= len(cuts):
            labels.append(f">{cuts[-1]:.3g}")
        else:
            labels.append(f"{cuts[b - 1]:.3g}-{cuts[b]:.3g}")
    return labels


def _counts_by_bin(rows: pd.DataFrame) -> dict[int, float]:
    summed = rows.groupby("bin")["rows"].sum()
    return dict(zip(summed.index.astype(int).tolist(), summed.astype(float).tolist(), strict=True))


def _distribution_chart(counts: pd.DataFrame, feature: str, edges: dict[str, list[float]]) -> Figure:
    rows = counts[counts["feature"] == feature]
    ref, cur = (_counts_by_bin(rows[rows[PERIOD] == period]) for period in (REFERENCE, CURRENT))
    bins = sorted(set(ref) | set(cur))
    x = np.arange(len(bins))
    figure = Figure(figsize=(5, 3))
    ax = figure.subplots()
    ax.bar(x - 0.2, shares(ref, bins), width=0.4, label="reference", color="#999")
    ax.bar(x + 0.2, shares(cur, bins), width=0.4, label="current", color="#3b6ea8")
    ax.set_xticks(x, _bin_labels(feature, bins, edges), rotation=45, ha="right", fontsize=7)
    ax.set_title(feature, fontsize=10)
    ax.set_ylabel("share of trips")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return '<p class="empty">None.</p>'
    return frame.to_html(index=False, border=0, classes="data", escape=True, float_format=lambda v: f"{v:.4f}")


def render(result: MonitorResult, tables: dict[str, Any], path: Path, psi_threshold: float) -> Path:
    """Write the report to `path` and return it."""
    verdict = "ALERT" if result.alert else "no alert"
    colour = "#b00" if result.alert else "#2a7"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result.reasons) or "<li>none</li>"
    realized = result.realized
    summary = pd.DataFrame(
        [
            ("model", f"{result.model_name} v{result.model_version}"),
            ("current window", f"{result.current['from']} .. {result.current['to']} ({result.source})"),
            ("reference window", f"{result.reference['from']} .. {result.reference['to']}"),
            ("trips (current / reference)", f"{result.rows_current:,} / {result.rows_reference:,}"),
            ("statistics on (current / reference)", _sampled(result.sampled)),
            ("realised RMSLE / validation RMSLE", f"{realized['rmsle']} / {realized['reference_rmsle']}"),
            ("prediction PSI", f"{result.prediction_psi}"),
            ("zero-variance reference features (not scored)", ", ".join(result.zero_variance_features) or "none"),
        ],
        columns=["", "value"],
    )
    sections = [f'<section><h2 style="color:{colour}">{verdict}</h2><ul>{reasons}</ul>{_table(summary)}</section>']
    errors: pd.DataFrame = tables["errors"]
    chart = error_chart(errors, realized.get("reference_rmsle"))
    if chart is not None:
        sections.append(
            f"<section><h2>Realised error over time</h2>{_img(chart, 'realised error per window')}</section>"
        )
    overall: pd.DataFrame = tables["drift_overall"].sort_values("psi", ascending=False)
    watched = [PREDICTED, ACTUAL, *[n for n in overall["feature"] if n not in (PREDICTED, ACTUAL)][:4]]
    chart = _drift_chart(tables["drift_windows"], watched, psi_threshold)
    if chart is not None:
        sections.append(f"<section><h2>Drift over time</h2>{_img(chart, 'PSI per window')}</section>")
    edges = {row["feature"]: list(row["edges"]) for row in tables["edges"].to_dict(orient="records")}
    shown = [PREDICTED, *[n for n in result.drifted_features if n != PREDICTED]][:MAX_DISTRIBUTIONS]
    if len(shown) < MAX_DISTRIBUTIONS:
        shown += [n for n in overall["feature"] if n not in shown][: MAX_DISTRIBUTIONS - len(shown)]
    images = "".join(
        f'<div class="dist">{_img(_distribution_chart(tables["counts"], name, edges), f"{name} distribution")}</div>'
        for name in shown
    )
    sections.append(f"<section><h2>Distributions: reference and current</h2>{images}</section>")
    sections.append(f"<section><h2>Drift per feature</h2>{_table(overall)}</section>")
    by_borough = errors[errors["grouping"] == 2][
        [PERIOD, "pickup_borough_name", "rows", "rmsle", "mae_minutes", "bias_minutes"]
    ].sort_values([PERIOD, "rows"], ascending=False)
    sections.append(f"<section><h2>Realised error by pickup borough</h2>{_table(by_borough)}</section>")
    sections.append(f"<section><h2>Quarantine share per reason</h2>{_table(tables['quality'])}</section>")
    title = f"Monitoring: {result.model_name} v{result.model_version}"
    css = _CSS + "div.dist { display: inline-block; width: 48%; vertical-align: top; }\n"
    document = (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{css}</style>'
        f"</head>\n<body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


def _sampled(sampled: dict[str, float]) -> str:
    """'all trips' or the share of each period's trips chosen by trip id (beyond `monitor.max_trips`)."""
    shares = [sampled.get(period, 1.0) for period in ("current", "reference")]
    return " / ".join("all trips" if share >= 1.0 else f"a {share:.2%} sample by trip id" for share in shares)
