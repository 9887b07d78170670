"""The champion as monitoring sees it: its registered version, validation RMSLE, training date range (the default
reference window) and the features to watch for drift."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from taxi_duration.errors import ConfigError, ModelNotFoundError
from taxi_duration.features.definitions import FEATURE_COLUMNS
from taxi_duration.monitor.drift import Feature
from taxi_duration.monitor.realized import ACTUAL, PREDICTED
from taxi_duration.registry.promotion import alias_version

# Integer features with few values: one bin per value. The rest get reference quantile bins.
CATEGORICAL_FEATURES = frozenset(
    {
        "pickup_hour",
        "pickup_weekday",
        "is_weekend",
        "is_holiday",
        "pickup_borough",
        "dropoff_borough",
        "pickup_is_airport",
        "dropoff_is_airport",
        "same_zone",
    }
)
# The calendar month differs between any two windows by construction: comparing it would always "drift".
NOT_MONITORED = frozenset({"pickup_month"})


@dataclass(frozen=True)
class Champion:
    name: str
    alias: str
    version: str
    run_id: str | None
    validation_rmsle: float | None
    first_pickup: datetime | None
    last_pickup: datetime | None
    features: tuple[str, ...]


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def resolve_champion(model_name: str, alias: str) -> Champion:
    """The aliased version with what monitoring needs from its training run: validation RMSLE, the training
    trips' pickup range (train logs them as the params `data_first_pickup`/`data_last_pickup`) and the features."""
    client = MlflowClient()
    version = alias_version(client, model_name, alias)
    if version is None:
        raise ModelNotFoundError(
            f"models:/{model_name}@{alias}: no such registered model or alias; run `taxi-duration train` first"
        )
    details = client.get_model_version(model_name, version)
    tags = dict(details.tags or {})
    run_id = tags.get("run_id") or details.run_id
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if run_id:
        try:
            run = client.get_run(run_id)
            params, metrics = dict(run.data.params), dict(run.data.metrics)
        except MlflowException:
            pass
    rmsle_text = tags.get("validation_rmsle")
    validation = float(rmsle_text) if rmsle_text else metrics.get("rmsle")
    features = tuple(
        name for name in params.get("features", ",".join(FEATURE_COLUMNS)).split(",") if name in FEATURE_COLUMNS
    )
    return Champion(
        name=model_name,
        alias=alias,
        version=version,
        run_id=run_id,
        validation_rmsle=validation,
        first_pickup=_parse_time(params.get("data_first_pickup")),
        last_pickup=_parse_time(params.get("data_last_pickup")),
        features=features,
    )


def monitored_features(champion: Champion) -> list[Feature]:
    """The champion's input features (less the calendar month), then the target and the prediction."""
    features = [
        Feature(name, "categorical" if name in CATEGORICAL_FEATURES else "numeric")
        for name in champion.features
        if name not in NOT_MONITORED
    ]
    return [*features, Feature(ACTUAL, "numeric"), Feature(PREDICTED, "numeric")]


def reference_window(champion: Champion, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The given reference, else the champion's training pickups [first, last] as a half-open window."""
    if start is not None and end is not None:
        return start, end
    if champion.first_pickup is None or champion.last_pickup is None:
        raise ConfigError(
            f"models:/{champion.name}/{champion.version}: its run records no training date range "
            "(params data_first_pickup/data_last_pickup); pass --reference-from and --reference-to"
        )
    return start or champion.first_pickup, end or champion.last_pickup + timedelta(microseconds=1)
