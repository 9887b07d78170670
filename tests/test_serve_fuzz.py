"""Schemathesis over the live API (uvicorn on 127.0.0.1): generated requests for every route from its OpenAPI
schema; no 5xx, responses that conform to the schema (status codes, content types, bodies), and every 422 names
its fields. CI runs a bounded number of examples per route; `benchmarks/serve.py --fuzz N` runs more."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import uvicorn_thread
from taxi_duration.serve.app import create_app
from taxi_duration.serve.predictor import ExportedModel

pytestmark = pytest.mark.server

EXAMPLES = int(os.environ.get("TAXI_DURATION_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def live_url(served_models: dict[str, Path]) -> Iterator[str]:
    model = ExportedModel.load(served_models["7"])
    app = create_app(lambda: model, "fuzz-key", max_batch=20, max_body_bytes=64 * 1024, body_seconds=5)
    with uvicorn_thread(app) as url:
        yield url


def every_422_names_its_fields(response: Any) -> None:
    if response.status_code != 422:
        return
    body = response.json()
    assert body["errors"], body
    for error in body["errors"]:
        assert error["field"] and error["message"], body
        assert f"{error['field']}: {error['message']}" in body["detail"], body


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_responses_conform(live_url: str, mode: GenerationMode) -> None:
    """Every route of the OpenAPI schema, with data that fits it (positive) and data that breaks it (negative)."""
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "POST /predict/batch", "POST /admin/reload"}
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not list(operation.body.items) and not list(operation.iter_parameters()):
            continue  # nothing to break: no parameters, no body

        @given(case=operation.as_strategy(generation_mode=mode))
        # derandomize: the same generated requests on every run (a CI that passes once passes again)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def run(case: Any) -> None:
            response = case.call(timeout=10)
            case.validate_response(response, checks=CHECKS)
            every_422_names_its_fields(response)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        try:
            run()
        except Unsatisfiable:
            # negative data for an operation whose only input is an optional free-form header (/admin/reload):
            # schemathesis finds nothing that breaks the schema; that operation's positive run still covers it
            assert mode is GenerationMode.NEGATIVE, operation.label
    # the generated requests reached the rules, not only the happy path
    assert 422 in statuses["POST /predict"] and 422 in statuses["POST /predict/batch"]
    if mode is GenerationMode.POSITIVE:
        assert 200 in statuses["POST /predict"]
