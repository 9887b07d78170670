"""Pipeline parameters (quality bounds, model, grid): one YAML file validated into pydantic models."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taxi_duration.errors import ConfigError

ModelKind = Literal["gbt", "rf", "linear", "xgboost"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QualityParams(_Strict):
    min_duration_s: int = Field(60, ge=0)
    max_duration_s: int = Field(21600, gt=0)
    max_distance_miles: float = Field(200, gt=0)
    max_speed_mph: float = Field(90, gt=0)
    max_passenger_count: int = Field(9, ge=1)
    min_year: int = 2009
    max_year: int = 2030
    nyc_bbox: tuple[float, float, float, float] = (40.40, -74.40, 41.10, -73.50)


class TuneParams(_Strict):
    method: Literal["train_validation_split", "cross_validator"] = "train_validation_split"
    num_folds: int = Field(3, ge=2)
    parallelism: int = Field(2, ge=1)
    grid: dict[ModelKind, dict[str, list[Any]]] = Field(default_factory=dict)


class TravelTimeParams(_Strict):
    min_trips: int = Field(3, ge=1)  # a zone pair needs this many training trips for a row of its own
    folds: int = Field(5, ge=2)  # out-of-fold medians for the training trips (no trip sees its own duration)


class TrainParams(_Strict):
    model: ModelKind = "gbt"
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    sample_fraction: float | None = Field(None, gt=0, le=1)
    # the estimator fits on a uniform sample of at most this many training trips (None: all of them); the
    # travel-time table and the out-of-fold features use every trip
    max_fit_trips: int | None = Field(500_000, ge=1)
    # the validation metrics (overall, per regime, baseline, the champion's on the same trips) are computed on a
    # uniform sample of at most this many validation trips (None: all of them)
    max_eval_trips: int | None = Field(500_000, ge=1)
    gbt: dict[str, Any] = Field(default_factory=dict)
    rf: dict[str, Any] = Field(default_factory=dict)
    linear: dict[str, Any] = Field(default_factory=dict)
    # SparkXGBRegressor's snake_case parameters; num_workers absent or null: one per core of the session
    xgboost: dict[str, Any] = Field(default_factory=dict)
    tune: TuneParams = Field(default_factory=lambda: TuneParams())
    promote_metric: Literal["rmsle", "rmse_minutes", "mae_minutes"] = "rmsle"
    # share of training trips whose recorded distance is hidden, so one model serves every regime
    masked_distance_fraction: float = Field(0.5, ge=0, lt=1)
    travel_times: TravelTimeParams = Field(default_factory=lambda: TravelTimeParams())
    # a challenger worse than the champion in any regime by more than this (relative RMSLE) is not promoted
    regime_tolerance: float = Field(0.02, ge=0)
    # a challenger replaces the champion only if lower by more than this fraction of the champion's value
    promote_tolerance: float = Field(0.001, ge=0, lt=1)
    # `cycle` retrains on this many of the newest months (None: all trips)
    window_months: int | None = Field(None, ge=1)


class RegistryParams(_Strict):
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"


class MonitorParams(_Strict):
    bins: int = Field(10, ge=2, le=100)  # reference quantile bins per numeric feature
    quantile_relative_error: float = Field(0.001, gt=0, lt=0.1)
    psi_threshold: float = Field(0.25, gt=0)  # PSI > 0.25: the usual "significant shift"
    js_threshold: float = Field(0.2, gt=0, le=1)  # Jensen-Shannon distance (base 2) on the same bins
    drifted_feature_share: float = Field(0.5, gt=0, le=1)  # alert when at least this share of features drifts
    realized_ratio: float = Field(1.25, gt=1)  # alert when realised RMSLE > ratio x validation RMSLE
    min_reference_rows: int = Field(1000, ge=1)
    min_current_rows: int = Field(100, ge=1)
    # a window of the time series counts towards the alert on its own only with at least this many trips
    min_window_rows: int = Field(1000, ge=1)
    # beyond this many trips in a period, the drift statistics and the realised error are computed on a sample of
    # them chosen by trip id (the trip counts stay exact); None: every trip
    max_trips: int | None = Field(500_000, ge=1000)


class PipelineParams(_Strict):
    quality: QualityParams = Field(default_factory=lambda: QualityParams())
    train: TrainParams = Field(default_factory=lambda: TrainParams())
    registry: RegistryParams = Field(default_factory=lambda: RegistryParams())
    monitor: MonitorParams = Field(default_factory=lambda: MonitorParams())


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, found {type(data).__name__}")
    return data


@lru_cache(maxsize=4)
def load_params(path: Path | None = None) -> PipelineParams:
    """The packaged defaults, with the user's file (if any) merged on top."""
    defaults = _load_yaml(
        resources.files("taxi_duration").joinpath("conf", "pipeline.yaml").read_text(encoding="utf-8"),
        "pipeline.yaml",
    )
    data = defaults
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read pipeline parameters ({exc.strerror})") from None
        data = _deep_merge(defaults, _load_yaml(text, str(path)))
    try:
        return PipelineParams.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path or 'pipeline.yaml'}: {where}: {first['msg']}") from None
