"""Register a trained model and decide, on the same validation data, whether it replaces the champion."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    metric: str
    challenger: float
    champion: float | None
    champion_version: str | None
    reason: str


def regime_regressions(
    challenger: dict[str, dict[str, float]], champion: dict[str, dict[str, float]], tolerance: float
) -> list[str]:
    """The regimes where the challenger's RMSLE is worse than the champion's by more than `tolerance` (relative),
    both measured on the same validation trips, as readable reasons."""
    worse = []
    for regime, values in challenger.items():
        theirs = champion.get(regime, {}).get("rmsle")
        ours = values.get("rmsle")
        if theirs is None or ours is None or math.isnan(theirs):
            continue
        if math.isnan(ours) or ours > theirs * (1 + tolerance):
            worse.append(f"{regime} rmsle {ours:.5f} > champion {theirs:.5f} (+{tolerance:.0%} tolerance)")
    return worse


def decide_promotion(
    metric: str,
    challenger: float,
    champion: float | None,
    champion_version: str | None = None,
    regressions: list[str] | None = None,
) -> PromotionDecision:
    """Lower is better. No champion yet -> promote; a tie keeps the current champion; so does a challenger worse
    than the champion in any regime (`regressions`, from `regime_regressions`)."""
    if math.isnan(challenger):
        return PromotionDecision(False, metric, challenger, champion, champion_version, f"challenger {metric} is NaN")
    if champion is None or math.isnan(champion):
        return PromotionDecision(True, metric, challenger, None, champion_version, "no champion yet")
    if regressions:
        why = f"challenger worse than champion v{champion_version} in {'; '.join(regressions)}; champion kept"
        return PromotionDecision(False, metric, challenger, champion, champion_version, why)
    if challenger < champion:
        why = f"challenger {metric} {challenger:.5f} < champion v{champion_version} {champion:.5f}"
        return PromotionDecision(True, metric, challenger, champion, champion_version, why)
    why = f"challenger {metric} {challenger:.5f} >= champion v{champion_version} {champion:.5f}; champion kept"
    return PromotionDecision(False, metric, challenger, champion, champion_version, why)


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points to, or None if the model or alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None
