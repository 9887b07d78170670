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


def decide_promotion(
    metric: str, challenger: float, champion: float | None, champion_version: str | None = None
) -> PromotionDecision:
    """Lower is better. No champion yet -> promote; a tie keeps the current champion."""
    if math.isnan(challenger):
        return PromotionDecision(False, metric, challenger, champion, champion_version, f"challenger {metric} is NaN")
    if champion is None or math.isnan(champion):
        return PromotionDecision(True, metric, challenger, None, champion_version, "no champion yet")
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
