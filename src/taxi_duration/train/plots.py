"""Diagnostic plots logged with each run: feature importance, residuals by hour, predicted vs actual."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def plot_feature_importance(names: Sequence[str], importances: Sequence[float], path: Path, title: str) -> Path:
    order = sorted(range(len(names)), key=lambda i: importances[i])
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.3 * len(names))))
    ax.barh([names[i] for i in order], [importances[i] for i in order], color="#3b6ea5")
    ax.set_xlabel("importance")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_residuals_by_hour(by_hour: pd.DataFrame, path: Path) -> Path:
    """`by_hour`: pickup_hour, mean_residual, mean_abs_error, baseline_mean_abs_error (minutes)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(by_hour["pickup_hour"], by_hour["mean_abs_error"], marker="o", label="model MAE")
    ax.plot(by_hour["pickup_hour"], by_hour["baseline_mean_abs_error"], marker="s", label="zone-pair median MAE")
    ax.plot(by_hour["pickup_hour"], by_hour["mean_residual"], linestyle="--", label="model mean residual")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("pickup hour")
    ax.set_ylabel("minutes")
    ax.set_xticks(range(0, 24, 2))
    ax.legend()
    ax.set_title("Validation error by pickup hour")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predicted_vs_actual(sample: pd.DataFrame, path: Path) -> Path:
    """`sample`: actual_minutes, predicted_minutes (a few thousand validation trips)."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(sample["actual_minutes"], sample["predicted_minutes"], s=4, alpha=0.3)
    low = max(0.5, float(min(sample["actual_minutes"].min(), sample["predicted_minutes"].min())))
    high = float(max(sample["actual_minutes"].max(), sample["predicted_minutes"].max()))
    ax.plot([low, high], [low, high], color="red", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("actual minutes")
    ax.set_ylabel("predicted minutes")
    ax.set_title("Predicted vs actual (validation sample)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
