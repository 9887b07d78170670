"""A FastAPI route class for the prediction endpoints: the usual request takes a shorter path through the framework.

Measured with a profiler under load (docs/benchmarks.md, "serve"): of the time a /predict request spends in the
server, the model and the ride's validation are about a fifth; FastAPI's generic request handler (parsing the
Content-Type with `email.message`, solving the dependency graph, validating the answer against the response model
again, telemetry hooks) is a larger share than both. This route class keeps FastAPI's handler for everything it
does not know to be the usual case and answers the usual case itself:

- the usual case: a `Content-Type: application/json` body (any parameters, e.g. charset) that parses to a JSON object
  and that the endpoint's body model accepts. The body is validated once, the endpoint is called with it, and its
  answer (a pydantic model) is written as JSON without None fields when the route says `response_model_exclude_none`;
- anything else (another or no content type, an empty body, JSON that does not parse, a body the model refuses)
  goes to FastAPI's own handler, so every error and its body are exactly FastAPI's. The body is read once: Starlette
  keeps it on the request for the second reader.

Only endpoints with one parameter, the body model, and no dependencies (the route's, or added by `include_router`)
take the shortcut (`shortcut()`); any other route of this class is an ordinary APIRoute. The OpenAPI schema is
built from the endpoint as for any route.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

import fastapi.routing
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

JSON = "application/json"


def _is_json(content_type: str | None) -> bool:
    """`application/json`, with or without parameters (`; charset=utf-8`), in any case."""
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON


class FastJsonRoute(APIRoute):
    """An APIRoute whose handler answers a valid JSON body without FastAPI's generic machinery (see the module)."""

    def effective(self) -> Any:
        """The route as FastAPI builds its handler. Since FastAPI 0.16x a route of an included router is built
        under an "effective route context" holding what the inclusion adds (dependencies, prefix, parameters), and
        `get_route_handler` runs inside it; earlier versions copied the route with those merged in. Read
        the way FastAPI reads it, so that dependencies added by `include_router` turn the shortcut off."""
        var = getattr(fastapi.routing, "_effective_route_context_var", None)
        context = var.get() if var is not None else None
        return context if context is not None and getattr(context, "original_route", None) is self else self

    def shortcut(self) -> tuple[str, type[BaseModel]] | None:
        """The endpoint's body parameter (name, model) when the shortcut applies: the body, a pydantic model, is
        the endpoint's only parameter and the route has no dependencies (its own or its router's); otherwise
        None."""
        route = self.effective()
        found = route.dependant
        if found is None:
            return None
        others = (found.path_params, found.query_params, found.header_params, found.cookie_params, found.dependencies)
        special = (
            found.request_param_name,
            found.websocket_param_name,
            found.http_connection_param_name,
            found.response_param_name,
            found.background_tasks_param_name,
            found.security_scopes_param_name,
        )
        if route.dependencies or any(others) or any(special) or len(found.body_params) != 1:
            return None
        body = found.body_params[0]
        model = body.field_info.annotation
        if route.response_model is None or not (inspect.isclass(model) and issubclass(model, BaseModel)):
            return None
        return body.name, model

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        shortcut = self.shortcut()
        if shortcut is None:
            return standard
        name, body_model = shortcut
        route = self.effective()
        endpoint = self.endpoint
        is_async = inspect.iscoroutinefunction(endpoint)
        exclude_none = route.response_model_exclude_none
        by_alias = route.response_model_by_alias
        status_code = route.status_code or 200

        async def handler(request: Request) -> Response:
            if not _is_json(request.headers.get("content-type")):
                return await standard(request)
            body = await request.body()
            try:
                data = json.loads(body)
            except ValueError:  # not JSON, or not UTF-8: FastAPI's 422 or 400
                return await standard(request)
            if not isinstance(data, dict):
                return await standard(request)
            try:
                validated = body_model.model_validate(data)
            except ValidationError:  # FastAPI's 422, with its locations and messages
                return await standard(request)
            arguments = {name: validated}
            answer = await endpoint(**arguments) if is_async else await run_in_threadpool(endpoint, **arguments)
            if isinstance(answer, Response):
                return answer
            content = answer.model_dump_json(exclude_none=exclude_none, by_alias=by_alias)
            return Response(content, status_code, media_type=JSON)

        return handler
