"""The comparison results as a Markdown table and two PNG charts (time and peak memory vs trips, log scales)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ENGINE_COLORS = {
    "pandas": "#150458",
    "polars": "#cd792c",
    "duckdb": "#e0b000",
    "spark": "#e25a1c",
    "spark-naive": "#888888",
}
MISSING = "-"


def _seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.1f}"


def _status(run: dict[str, Any]) -> str:
    if run["status"] == "ok":
        return "ok"
    if run["status"] == "oom":
        return f"**out of memory at {run['rows']:,} rows** ({run.get('memory_bound', '')})"
    if run["status"] == "skipped":
        return f"skipped ({run.get('error', '')})"
    return f"error: {str(run.get('error', ''))[-120:]}"


def _rmse(run: dict[str, Any], key: str) -> str:
    training = run.get("results", {}).get("training")
    return MISSING if not training else f"{training[key]:.3f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per engine x size: status, step seconds, trips/s, peak memory, load, RMSEs."""
    lines = [
        "| trips | engine | status | report s | features s | train s | CSV load s | child wall s | trips/s "
        "(report+features) | peak RSS MB | load 1 min | boosting RMSE | forest RMSE |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in summary["runs"]:
        steps = run.get("steps", {})
        report_s = None
        if "borough_report" in steps:
            report_s = steps.get("borough_report", 0.0) + steps.get("load", 0.0)
        rate, peak = run.get("rows_per_s"), run.get("peak_rss_mb")
        lines.append(
            f"| {run['rows']:,} | {run['engine']} | {_status(run)} | {_seconds(report_s)} "
            f"| {_seconds(steps.get('features'))} | {_seconds(steps.get('train'))} "
            f"| {_seconds(steps.get('load_csv'))} | {_seconds(run.get('seconds'))} "
            f"| {MISSING if rate is None else f'{rate:,}'} "
            f"| {MISSING if peak is None else f'{peak:,}'} "
            f"| {run.get('load_1min', MISSING)} | {_rmse(run, 'boost_rmse')} | {_rmse(run, 'forest_rmse')} |"
        )
    return "\n".join(lines)


def naive_vs_tuned(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per size with both Spark variants: report+features seconds of each and the ratio naive / tuned."""
    by_key = {(r["engine"], r["rows"]): r for r in summary["runs"] if r["status"] == "ok"}
    found = []
    for rows in sorted({r["rows"] for r in summary["runs"]}):
        naive, tuned = by_key.get(("spark-naive", rows)), by_key.get(("spark", rows))
        if naive and tuned and tuned["pipeline_seconds"] > 0:
            found.append(
                {
                    "rows": rows,
                    "naive_seconds": naive["pipeline_seconds"],
                    "tuned_seconds": tuned["pipeline_seconds"],
                    "ratio": round(naive["pipeline_seconds"] / tuned["pipeline_seconds"], 2),
                }
            )
    return found


def markdown(summary: dict[str, Any], image_links: dict[str, str] | None = None) -> str:
    """The whole section: what was run, the table, the naive/tuned ratio, mismatches, charts."""
    config = summary["config"]
    training = (
        f"Training on at most {config['train_rows']:,} trips (validation {config['train_rows'] // 4:,}), boosting "
        f"{config['boost_iterations']} trees, forest {config['forest_trees']} trees."
        if config["train_rows"]
        else "No training in this run."
    )
    lines = [
        f"Run {summary['started']} - {summary.get('finished', '(unfinished)')} on {summary['machine']}.",
        f"Memory bound: pandas/Polars/DuckDB children `RLIMIT_AS` {config['memory_cap'] or 'none'}; Spark driver "
        f"heap {config['driver_memory']} (`local[*]`). {training} Formats: {', '.join(config['formats'])}.",
        "",
        markdown_table(summary),
        "",
    ]
    ratios = naive_vs_tuned(summary)
    for ratio in ratios:
        lines.append(
            f"Naive vs tuned Spark, {ratio['rows']:,} trips: report + features {ratio['naive_seconds']:,.1f} s vs "
            f"{ratio['tuned_seconds']:,.1f} s, **{ratio['ratio']}x**."
        )
    if summary["mismatches"]:
        lines.append(f"**Results differ between engines** ({len(summary['mismatches'])}):")
        lines += [f"- {m}" for m in summary["mismatches"][:20]]
    else:
        lines.append("Results agree across all engines that completed (counts exact, means and sums to 1e-9).")
    for title, link in (image_links or {}).items():
        lines += ["", f"![{title}]({link})"]
    return "\n".join(lines)


def _chart(summary: dict[str, Any], value: str, ylabel: str, title: str) -> Figure:
    figure = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    engines = list(dict.fromkeys(r["engine"] for r in summary["runs"]))
    for engine in engines:
        # one point per size (the first run of it, when several saved runs are drawn together)
        first: dict[int, dict[str, Any]] = {}
        for run in summary["runs"]:
            if run["engine"] == engine and run["status"] == "ok":
                first.setdefault(run["rows"], run)
        runs = [first[rows] for rows in sorted(first)]
        color = ENGINE_COLORS.get(engine)
        if runs:
            ax.plot([r["rows"] for r in runs], [max(r[value], 1e-3) for r in runs], "o-", label=engine, color=color)
        for failed in (r for r in summary["runs"] if r["engine"] == engine and r["status"] == "oom"):
            point = (failed["rows"], max(failed.get(value) or 1e-3, 1e-3))
            ax.plot(*point, "x", color=color, markersize=12)
            bound = str(failed.get("memory_bound", "")).replace("RLIMIT_AS ", "cap ")
            ax.annotate(
                f"{engine} out of memory ({bound})", point, fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("trips")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    figure.tight_layout()
    return figure


def write_charts(summary: dict[str, Any], folder: Path, prefix: str = "compare") -> dict[str, Path]:
    """compare_time.png (report + features seconds) and compare_memory.png (peak RSS of the process tree)."""
    folder.mkdir(parents=True, exist_ok=True)
    charts = {
        "time": _chart(summary, "pipeline_seconds", "seconds (report + features)", "Wall time vs trips"),
        "memory": _chart(summary, "peak_rss_mb", "peak RSS of the process tree (MB)", "Peak memory vs trips"),
    }
    written = {}
    for name, figure in charts.items():
        path = folder / f"{prefix}_{name}.png"
        figure.savefig(path, dpi=100)
        written[name] = path
    return written


def write_outputs(summary: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The Markdown section and the charts next to the JSON of the run."""
    charts = write_charts(summary, folder)
    md_path = Path(summary["json"]).with_suffix(".md")
    md_path.write_text(markdown(summary, {k: p.name for k, p in charts.items()}) + "\n", encoding="utf-8")
    return {"markdown": md_path, **charts}
