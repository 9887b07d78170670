"""FastJsonRoute answers exactly what FastAPI's own route answers: the same app built with both route classes is sent
the same requests (valid bodies, and every kind of bad body), and the answers are compared byte for byte."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi.routing
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field, field_validator

from taxi_duration.serve.errors import ApiError, add_error_handlers
from taxi_duration.serve.fast_route import FastJsonRoute


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    size: float | None = Field(None, ge=0)
    tag: str | int | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value == "forbidden":
            raise ValueError("is not served here")
        return value


class Answer(BaseModel):
    name: str
    doubled: float | None = None
    tag: str | int | None = None


class Items(BaseModel):
    items: list[Item] = Field(min_length=1, max_length=3)


class Answers(BaseModel):
    answers: list[Answer]


def _answer(item: Item) -> Answer:
    if item.name == "unavailable":
        raise ApiError(503, "nothing to answer with")
    return Answer(name=item.name, doubled=None if item.size is None else item.size * 2.1, tag=item.tag)


async def _one() -> int:
    return 1


def build(route_class: type[APIRoute]) -> tuple[FastAPI, APIRouter]:
    router = APIRouter(route_class=route_class)

    @router.post("/one", response_model=Answer, response_model_exclude_none=True)
    async def one(item: Item) -> Answer:
        return _answer(item)

    @router.post("/many", response_model=Answers, response_model_exclude_none=True)
    def many(batch: Items) -> Answers:  # a plain function: FastAPI runs it in its thread pool, as the shortcut does
        return Answers(answers=[_answer(item) for item in batch.items])

    @router.post("/with-dependency", response_model=Answer)
    async def with_dependency(item: Item, extra: Annotated[int, Depends(_one)]) -> Answer:
        return Answer(name=item.name, doubled=float(extra))

    app = FastAPI()
    add_error_handlers(app)
    app.include_router(router)
    return app, router


STANDARD = TestClient(build(APIRoute)[0])
FAST_APP, ROUTER = build(FastJsonRoute)
FAST = TestClient(FAST_APP)
JSON = {"content-type": "application/json"}

REQUESTS: list[tuple[str, bytes, dict[str, str]]] = [
    ("/one", b'{"name": "a", "size": 1.5, "tag": 7}', JSON),
    ("/one", b'{"name": "caf\\u00e9", "size": 0.1}', {"content-type": "application/json; charset=utf-8"}),
    ("/one", b'{"name": "b", "tag": "x"}', {"content-type": "Application/JSON"}),
    ("/one", b'{"name": "c", "size": 3}', {"content-type": "application/vnd.example+json"}),  # FastAPI reads +json
    ("/one", b'{"name": "c", "size": 3}', {}),  # no content type
    ("/one", b'{"name": "c", "size": 3}', {"content-type": "text/plain"}),
    ("/one", b"", JSON),
    ("/one", b'{"name": "a",', JSON),
    ("/one", b"[1, 2]", JSON),
    ("/one", b'"a"', JSON),
    ("/one", b"\xff\xfe{}", JSON),
    ("/one", b'{"name": "a", "size": NaN}', JSON),
    ("/one", b'{"name": "a", "size": -1}', JSON),
    ("/one", b'{"name": "forbidden"}', JSON),
    ("/one", b'{"name": "a", "colour": "red"}', JSON),
    ("/one", b'{"name": "unavailable"}', JSON),
    ("/many", b'{"items": [{"name": "a", "size": 1}, {"name": "b"}]}', JSON),
    ("/many", b'{"items": []}', JSON),
    ("/many", b'{"items": [{"name": "a"}, {"name": "forbidden"}]}', JSON),
    ("/with-dependency", b'{"name": "d"}', JSON),
    ("/with-dependency", b'{"name": 4}', JSON),
]


@pytest.mark.parametrize(("path", "body", "headers"), REQUESTS, ids=[f"{p}-{b[:24]!r}-{h}" for p, b, h in REQUESTS])
def test_answers_equal_fastapis_own_route(path: str, body: bytes, headers: dict[str, str]) -> None:
    expected = STANDARD.post(path, content=body, headers=headers)
    got = FAST.post(path, content=body, headers=headers)
    assert (got.status_code, got.content) == (expected.status_code, expected.content)
    assert got.headers["content-type"] == expected.headers["content-type"]


def test_valid_bodies_are_answered_with_values() -> None:
    response = FAST.post("/one", json={"name": "a", "size": 2.0, "tag": 3})
    assert response.json() == {"name": "a", "doubled": 4.2, "tag": 3}
    assert FAST.post("/one", json={"name": "a"}).json() == {"name": "a"}  # None fields left out
    many = FAST.post("/many", json={"items": [{"name": "a", "size": 1.0}, {"name": "b"}]}).json()
    assert many == {"answers": [{"name": "a", "doubled": 2.1}, {"name": "b"}]}


def test_only_routes_with_one_body_parameter_and_no_dependency_take_the_shortcut() -> None:
    routes = {route.path: route for route in ROUTER.routes if isinstance(route, FastJsonRoute)}
    assert routes["/one"].shortcut() == ("item", Item)
    assert routes["/many"].shortcut() == ("batch", Items)
    assert routes["/with-dependency"].shortcut() is None


def test_a_valid_body_skips_fastapis_dependency_solving(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the shortcut is for (its time is measured in benchmarks/serve.py): FastAPI's generic handler, which
    solves the dependency graph for every request, is not run for a valid body, and is for an invalid one."""
    solved: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    assert FAST.post("/one", json={"name": "a"}).status_code == 200
    assert FAST.post("/many", json={"items": [{"name": "a"}]}).status_code == 200
    assert solved == []
    assert FAST.post("/one", json={"name": "a", "size": -1}).status_code == 422
    assert FAST.post("/with-dependency", json={"name": "a"}).status_code == 200
    assert solved == ["/one", "/with-dependency"]


def test_a_dependency_added_by_include_router_turns_the_shortcut_off() -> None:
    """A router included with a dependency (an API key, say) must run it for every request: no shortcut."""
    calls: list[str] = []

    async def guard() -> None:
        calls.append("guard")

    router = APIRouter(route_class=FastJsonRoute)

    @router.post("/one", response_model=Answer)
    async def one(item: Item) -> Answer:
        return _answer(item)

    app = FastAPI()
    app.include_router(router, prefix="/v1", dependencies=[Depends(guard)])
    response = TestClient(app).post("/v1/one", json={"name": "a", "size": 1.0})
    assert response.status_code == 200 and response.json()["doubled"] == 2.1
    assert calls == ["guard"]


def test_the_openapi_schema_is_unchanged() -> None:
    assert FAST.get("/openapi.json").json() == STANDARD.get("/openapi.json").json()
