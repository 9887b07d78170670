"""How the API answers errors: always JSON with a `detail` line naming the field or the body.

A 422 also lists every field (`errors`: field, message, type; the OpenAPI schema's `ValidationErrorBody`); an
`ApiError` is answered with its status code; Starlette's HTTP errors (a body that is not UTF-8, an unknown path)
keep their status and say what went wrong in the same shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from taxi_duration.serve.models import RULE_ERROR


class ApiError(Exception):
    """An error answered as JSON {"detail": message} with its status code."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def printable(text: str) -> str:
    """`text` as valid UTF-8: lone surrogates (valid in JSON escapes, not in UTF-8) escaped, never a 500."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part != "body"]
    return ".".join(parts) or "body"


def describe(error: dict[str, Any]) -> dict[str, str]:
    """One pydantic error as {"field", "message", "type"}: the field dotted, the message in plain words."""
    kind = str(error.get("type", ""))
    loc = tuple(error.get("loc", ()))
    field = printable(_field(loc))
    message = printable(str(error.get("msg", "invalid")).removeprefix("Value error, "))
    if kind == "json_invalid":
        field, message = "body", f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    elif kind == "missing" and field == "body":
        message = "a JSON object is required"
    elif kind == "extra_forbidden":
        message = "unknown field"
    elif kind in ("model_attributes_type", "dict_type", "model_type"):
        message = "expected a JSON object"
    elif kind == RULE_ERROR:  # a rule across fields, about the field it names
        ctx = error.get("ctx", {})
        field = ".".join(part for part in (field if field != "body" else "", str(ctx.get("field"))) if part)
        message = printable(str(ctx.get("rule")))
    else:
        message = message[0].lower() + message[1:] if message else message
    return {"field": field, "message": message, "type": kind}


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [describe(dict(error)) for error in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.message})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = str(exc.detail)
    if exc.status_code == 400:  # FastAPI could not decode the body (e.g. bytes that are not UTF-8)
        detail = f"body: cannot be read as JSON text ({detail[0].lower() + detail[1:]})"
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


def add_error_handlers(app: FastAPI) -> None:
    """Answer validation errors, `ApiError`s and HTTP errors of `app` as described above."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
