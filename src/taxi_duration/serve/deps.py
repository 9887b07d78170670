"""FastAPI dependencies of the routes: the app's `Serving` and `Metrics`, the current model, the admin key check.

Each reads what `create_app` put on `app.state`, so tests can replace one with `app.dependency_overrides`.
"""

from __future__ import annotations

import hmac
from typing import Annotated, cast

from fastapi import Depends, Header, Request

from taxi_duration.serve.errors import ApiError
from taxi_duration.serve.metrics import Metrics
from taxi_duration.serve.predictor import ExportedModel
from taxi_duration.serve.serving import Serving


async def get_serving(request: Request) -> Serving:
    return cast(Serving, request.app.state.serving)


async def get_metrics(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


ServingDep = Annotated[Serving, Depends(get_serving)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def current_model(serving: ServingDep) -> ExportedModel:
    """The served model; 503 without one.

    Only for routes without a body: FastAPI runs dependencies before it validates the body, so /predict asks
    `serving.current()` itself, and an invalid ride is a 422 whether a model is loaded or not."""
    return serving.current()


CurrentModel = Annotated[ExportedModel, Depends(current_model)]


async def require_admin(
    request: Request, x_api_key: Annotated[str | None, Header(description="The admin key")] = None
) -> None:
    """403 when the app has no admin key (admin endpoints off), 401 without the header, 403 for a wrong key."""
    admin_key: str | None = request.app.state.admin_key
    if admin_key is None:
        raise ApiError(403, "admin endpoints are disabled: the server was started without an admin key")
    if not x_api_key:
        raise ApiError(401, "X-API-Key: header required for admin endpoints")
    if not hmac.compare_digest(x_api_key.encode("utf-8", "backslashreplace"), admin_key.encode("utf-8")):
        raise ApiError(403, "X-API-Key: wrong key")
