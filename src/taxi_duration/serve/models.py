"""The API's request and response bodies (pydantic), and the bounds a ride must keep.

The bounds are the pipeline's quality parameters (`QualityParams`: longest distance, most passengers, first year,
the New York bounding box), the same ones ingest applies to training trips. `Ride` and `BatchRequest` carry the
package defaults; `request_models(quality, max_batch)` subclasses them for one app with that app's bounds, so two
apps in one process can accept different rides and each app's OpenAPI schema states its own bounds. Every
validator reads the bounds of its own class (`cls.quality`, `cls.max_batch`), never a module global.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, ClassVar, NamedTuple

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from taxi_duration.columns import SERVICES
from taxi_duration.params import QualityParams
from taxi_duration.regimes import Regime, regime_of
from taxi_duration.serve.online_features import NEW_YORK
from taxi_duration.zones import MAX_ZONE_ID

DEFAULT_QUALITY = QualityParams()  # the package defaults: what an app gets without the pipeline config's `quality`
DEFAULT_MAX_BATCH = 1000
MAX_AHEAD = timedelta(days=1)
RULE_ERROR = "ride_rule"  # the error type of a rule across fields (errors.py reports it against the field it names)


def now_new_york() -> datetime:
    """The current New York wall-clock time (naive, like canonical pickup times)."""
    return datetime.now(NEW_YORK).replace(tzinfo=None)


def _valid_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _rule(field: str, rule: str) -> PydanticCustomError:
    """A rule across fields, reported against the field it asks for."""
    return PydanticCustomError(RULE_ERROR, "{field}: {rule}", {"field": field, "rule": rule})


def _first_pickup(quality: QualityParams) -> date:
    return date(quality.min_year, 1, 1)


# ---------------------------------------------------------------------------------------------- bounded fields
# One function per field whose bounds come from QualityParams: `Ride` declares them with the defaults, and
# `request_models` redeclares them with an app's parameters (same order, same text, other numbers).


def _distance_field(quality: QualityParams) -> Any:
    return Field(
        None,
        description="Metered route distance in miles; without it the zone pair's median distance is used "
        "(regime zones_only or coordinates_only)",
        json_schema_extra={"minimum": 0, "maximum": quality.max_distance_miles},
    )


def _pickup_field(quality: QualityParams) -> Any:
    return Field(
        None,
        description=f"ISO 8601; without an offset it is New York time. From {_first_pickup(quality)} to 1 day from "
        "now. Default: now in New York",
    )


def _passengers_field(quality: QualityParams) -> Any:
    return Field(
        None,
        description=f"0..{quality.max_passenger_count}",
        json_schema_extra={"minimum": 0, "maximum": quality.max_passenger_count},
    )


def _latitude_field(quality: QualityParams) -> Any:
    lat_min, _, lat_max, _ = quality.nyc_bbox
    return Field(None, json_schema_extra={"minimum": lat_min, "maximum": lat_max})


def _longitude_field(quality: QualityParams) -> Any:
    _, lon_min, _, lon_max = quality.nyc_bbox
    return Field(None, json_schema_extra={"minimum": lon_min, "maximum": lon_max})


def _bounded_fields(quality: QualityParams) -> dict[str, Any]:
    """`Ride`'s fields whose bounds are quality parameters, as create_model's (type, FieldInfo) pairs."""
    return {
        "trip_distance": (float | None, _distance_field(quality)),
        "pickup_datetime": (datetime | None, _pickup_field(quality)),
        "passenger_count": (int | None, _passengers_field(quality)),
        "pickup_latitude": (float | None, _latitude_field(quality)),
        "pickup_longitude": (float | None, _longitude_field(quality)),
        "dropoff_latitude": (float | None, _latitude_field(quality)),
        "dropoff_longitude": (float | None, _longitude_field(quality)),
    }


# ---------------------------------------------------------------------------------------------- requests


class Ride(BaseModel):
    """One ride to predict: zones (TLC ids) or coordinates for each end; everything else optional."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    quality: ClassVar[QualityParams] = DEFAULT_QUALITY  # the bounds the validators apply

    PULocationID: int | None = Field(
        None,
        validation_alias=AliasChoices("PULocationID", "pickup_location_id"),
        description=f"Pickup TLC zone id (1..{MAX_ZONE_ID}); or give pickup_latitude/pickup_longitude",
        examples=[130],
        json_schema_extra={"minimum": 1, "maximum": MAX_ZONE_ID},
    )
    DOLocationID: int | None = Field(
        None,
        validation_alias=AliasChoices("DOLocationID", "dropoff_location_id"),
        description=f"Dropoff TLC zone id (1..{MAX_ZONE_ID}); or give dropoff_latitude/dropoff_longitude",
        examples=[205],
        json_schema_extra={"minimum": 1, "maximum": MAX_ZONE_ID},
    )
    trip_distance: float | None = _distance_field(DEFAULT_QUALITY)
    pickup_datetime: datetime | None = _pickup_field(DEFAULT_QUALITY)
    passenger_count: int | None = _passengers_field(DEFAULT_QUALITY)
    service: str | None = Field(
        None, description=f"One of {', '.join(SERVICES)}", json_schema_extra={"enum": list(SERVICES)}
    )
    ride_id: str | int | None = Field(None, description="Echoed in the response")
    pickup_latitude: float | None = _latitude_field(DEFAULT_QUALITY)
    pickup_longitude: float | None = _longitude_field(DEFAULT_QUALITY)
    dropoff_latitude: float | None = _latitude_field(DEFAULT_QUALITY)
    dropoff_longitude: float | None = _longitude_field(DEFAULT_QUALITY)

    @field_validator("PULocationID", "DOLocationID", "passenger_count", mode="before")
    @classmethod
    def _not_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true/false would otherwise pass as 1/0
            raise ValueError(f"must be an integer, got {str(value).lower()}")
        return value

    @field_validator("ride_id", "service", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _valid_text(value)

    @field_validator("PULocationID", "DOLocationID")
    @classmethod
    def _zone(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_ZONE_ID:
            raise ValueError(f"must be a TLC zone id from 1 to {MAX_ZONE_ID}, got {value}")
        return value

    @field_validator("trip_distance")
    @classmethod
    def _distance(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"must not be negative, got {value}")
        if value is not None and value > cls.quality.max_distance_miles:
            raise ValueError(f"must be at most {cls.quality.max_distance_miles:g} miles, got {value}")
        return value

    @field_validator("pickup_datetime")
    @classmethod
    def _pickup(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        first = _first_pickup(cls.quality)
        try:
            local = value.astimezone(NEW_YORK).replace(tzinfo=None) if value.tzinfo is not None else value
        except OverflowError:  # 0001-01-01T00:00:00Z or 9999-12-31T23:59:59-05:00 leave datetime's range in New York
            raise ValueError(f"must be from {first} to 1 day from now, got {value.isoformat()}") from None
        if local.date() < first:
            raise ValueError(f"must not be before {first} (TLC data starts in {cls.quality.min_year})")
        if local > now_new_york() + MAX_AHEAD:
            raise ValueError("must not be more than 1 day in the future")
        return local

    @field_validator("passenger_count")
    @classmethod
    def _passengers(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= cls.quality.max_passenger_count:
            raise ValueError(f"must be from 0 to {cls.quality.max_passenger_count}, got {value}")
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        if value is not None and value not in SERVICES:
            raise ValueError(f"must be one of {', '.join(SERVICES)}, got {value!r}")
        return value

    @field_validator("pickup_latitude", "dropoff_latitude")
    @classmethod
    def _latitude(cls, value: float | None) -> float | None:
        lat_min, _, lat_max, _ = cls.quality.nyc_bbox
        if value is not None and not lat_min <= value <= lat_max:
            raise ValueError(f"must be within New York ({lat_min} to {lat_max}), got {value}")
        return value

    @field_validator("pickup_longitude", "dropoff_longitude")
    @classmethod
    def _longitude(cls, value: float | None) -> float | None:
        _, lon_min, _, lon_max = cls.quality.nyc_bbox
        if value is not None and not lon_min <= value <= lon_max:
            raise ValueError(f"must be within New York ({lon_min} to {lon_max}), got {value}")
        return value

    @model_validator(mode="after")
    def _locations(self) -> Ride:
        for end, zone, lat, lon, zone_name in (
            ("pickup", self.PULocationID, self.pickup_latitude, self.pickup_longitude, "PULocationID"),
            ("dropoff", self.DOLocationID, self.dropoff_latitude, self.dropoff_longitude, "DOLocationID"),
        ):
            if (lat is None) != (lon is None):
                missing = f"{end}_latitude" if lat is None else f"{end}_longitude"
                raise _rule(missing, f"required with {end}_{'longitude' if lat is None else 'latitude'}")
            if zone is None and lat is None:
                raise _rule(zone_name, f"required (or give {end}_latitude and {end}_longitude)")
        return self

    def trip(self) -> dict[str, Any]:
        """The canonical trip the model scores."""
        return {
            "pickup_datetime": self.pickup_datetime or now_new_york(),
            "pickup_location_id": self.PULocationID,
            "dropoff_location_id": self.DOLocationID,
            "trip_distance": self.trip_distance,
            "pickup_latitude": self.pickup_latitude,
            "pickup_longitude": self.pickup_longitude,
            "dropoff_latitude": self.dropoff_latitude,
            "dropoff_longitude": self.dropoff_longitude,
            "passenger_count": self.passenger_count,
        }

    @property
    def regime(self) -> Regime:
        """What the ride gives: its distance (recorded_distance), both zones (zones_only) or coordinates."""
        return regime_of(
            {
                "trip_distance": self.trip_distance,
                "pickup_location_id": self.PULocationID,
                "dropoff_location_id": self.DOLocationID,
            }
        )


def _rides_field(max_batch: int) -> Any:
    return Field(description=f"1 to {max_batch} rides", min_length=1, max_length=max_batch)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_batch: ClassVar[int] = DEFAULT_MAX_BATCH

    rides: list[Ride] = _rides_field(DEFAULT_MAX_BATCH)

    @field_validator("rides", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must hold at least one ride")
            if len(value) > cls.max_batch:
                raise ValueError(f"must hold at most {cls.max_batch} rides per request, got {len(value)}")
        return value


class RequestModels(NamedTuple):
    """The request bodies of one app: its `Ride` and its `BatchRequest` (of those rides)."""

    ride: type[Ride]
    batch: type[BatchRequest]


def request_models(quality: QualityParams = DEFAULT_QUALITY, max_batch: int = DEFAULT_MAX_BATCH) -> RequestModels:
    """`Ride` and `BatchRequest` with `quality`'s bounds and at most `max_batch` rides per batch, for one app.

    Subclasses named like their bases (the OpenAPI schema keeps the names "Ride" and "BatchRequest"), whose bounded
    fields state the new bounds in the schema and whose validators apply them."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    ride = create_model("Ride", __base__=Ride, __doc__=Ride.__doc__, **_bounded_fields(quality))
    ride.quality = quality
    rides: Any = list[ride]  # a type built at run time, for pydantic
    batch = create_model("BatchRequest", __base__=BatchRequest, rides=(rides, _rides_field(max_batch)))
    batch.max_batch = max_batch
    return RequestModels(ride, batch)


# ---------------------------------------------------------------------------------------------- responses

REGIME = Field(
    description="What the ride gave, and so how it was predicted: recorded_distance (the metered distance), "
    "zones_only (zones, the distance estimated from the zone pair's median) or coordinates_only"
)


class Prediction(BaseModel):
    duration_minutes: float
    model_name: str
    model_version: str
    regime: Regime = REGIME
    ride_id: str | int | None = None


class RidePrediction(BaseModel):
    duration_minutes: float
    regime: Regime = REGIME
    ride_id: str | int | None = None


class BatchPrediction(BaseModel):
    model_name: str
    model_version: str
    predictions: list[RidePrediction]


class ShadowInfo(BaseModel):
    model_name: str | None = None
    model_version: str | None = None
    rides: int = Field(description="Rides scored by both models since the server started")
    mean_abs_diff_minutes: float | None = Field(description="Mean |served - shadow| in minutes (null before a ride)")


class ModelInfo(BaseModel):
    model_name: str
    model_version: str
    kind: str
    metrics: dict[str, Any]
    metrics_by_regime: dict[str, Any] = Field(description="validation metrics per regime, from train")
    features: list[str]
    spark_version: str
    exported_at: str
    feature_sql_sha256: str
    shadow: ShadowInfo | None = None


class Zone(BaseModel):
    id: int
    zone: str
    borough: str


class Stats(BaseModel):
    requests: int
    predicted_rides: int
    started_at: str
    model_version: str | None
    shadow: ShadowInfo | None = None
    request_log_rows: int | None = None


class ReloadResult(BaseModel):
    model_name: str
    model_version: str
    previous_version: str | None


class Status(BaseModel):
    status: str
    model_name: str | None = None
    model_version: str | None = None
    detail: str | None = None


class FieldError(BaseModel):
    field: str = Field(description='The field, dotted for nested ones ("rides.2.PULocationID"); "body" for all')
    message: str
    type: str


class ValidationErrorBody(BaseModel):
    """What every 422 answers: one line in `detail`, one entry per field in `errors`."""

    detail: str
    errors: list[FieldError]


class ErrorBody(BaseModel):
    detail: str
