"""A deadline for receiving a request body, as ASGI middleware.

uvicorn's timeouts are for idle keep-alive connections: a client that sends its headers and then trickles or never
finishes its body would hold a connection (and a request) forever. The size cap is FastAPI's own `max_body_size`
(413 from `Content-Length` before anything is read, or as soon as a chunked body passes it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def too_slow(seconds: float) -> str:
    return f"body: not received within {seconds:g} s"


class BodyDeadline:
    """408 (and the connection closed) for a body not received within `seconds` of the first read."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        complete = False

        async def receive_in_time() -> Any:
            nonlocal deadline, complete
            if complete:  # after the body Starlette only waits for a disconnect, which has no deadline
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.seconds
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                # raised inside the route's body read: FastAPI passes HTTPExceptions on to the app's handler
                raise HTTPException(408, too_slow(self.seconds), headers={"Connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, receive_in_time, send)
