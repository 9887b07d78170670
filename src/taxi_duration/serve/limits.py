"""Request body limits for the API, as ASGI middleware: a size cap and a deadline for receiving the body.

uvicorn has neither (its timeouts are for idle keep-alive connections): without them one 10 MB body of unknown keys
holds the worker for seconds and comes back as a 50 MB 422, and a client that never finishes its body holds a
connection forever. FastAPI's own `max_body_size` (0.165+) answers a plain-text "Content Too Large" that names no
limit and that the OpenAPI error body cannot describe; this keeps every error JSON with a `detail` naming `body`.

- A `Content-Length` above `max_bytes` is answered 413 before anything is read or parsed; a chunked body is counted
  as it arrives and cut off with 413 once past the limit.
- The body must arrive within `seconds` of the first read: a slow or stalled body gets 408, and the server closes
  the connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def too_large(max_bytes: int) -> str:
    return f"body: larger than the {max_bytes:,}-byte limit of this server"


def too_slow(seconds: float) -> str:
    return f"body: not received within {seconds:g} s"


class BodyLimits:
    """413 for a body beyond `max_bytes`, 408 for one not received within `seconds`."""

    def __init__(self, app: ASGIApp, max_bytes: int, seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _answer(send, 413, too_large(self.max_bytes))
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        received = 0
        complete = False

        async def limited() -> Any:
            nonlocal deadline, received, complete
            if complete:  # after the body Starlette only waits for a disconnect, which has no deadline
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.seconds
            try:
                # a timer on this task, not `wait_for` (which wraps each receive in a task of its own)
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # raised inside the route's body read: FastAPI passes HTTPExceptions on to the app's handler
                raise HTTPException(408, too_slow(self.seconds), headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large(self.max_bytes), headers={"Connection": "close"})
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
