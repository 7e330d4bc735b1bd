"""Request limits: body size (413), time per request (504), k (400).

The body limit is ASGI middleware: a declared ``Content-Length`` over the limit is refused
before a byte is read, and a body sent without one (chunked) is counted as it streams in
and refused as soon as it passes the limit, so a large body is never held in memory.
The queue bound per replica is Ray Serve's (``max_queued_requests``, service.serve).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, error_response

T = TypeVar("T")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the streamed body passes the limit. A FastAPI
    HTTPException, so that FastAPI's body parsing lets it through as it is (it turns any
    other exception raised while reading the body into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: refuse request bodies larger than ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int, on_refused: Callable[[], None] | None = None):
        self.app, self.limit, self.on_refused = app, limit, on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:  # the app already answered: nothing more can be said
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on_refused is not None:
            self.on_refused()
        message = BodyTooLarge(self.limit).detail
        response = error_response(413, "body_too_large", message, {"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses it before us; count the bytes anyway
    return None


async def within_time(timeout_s: float, work: Callable[[], T]) -> T:
    """Run the blocking ``work`` in a worker thread; 504 if it takes longer than
    ``timeout_s``. The answer goes out at the deadline; the thread cannot be interrupted
    and finishes in the background (its result is dropped)."""
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except TimeoutError as exc:
        raise ApiError(
            504, "timeout", f"the request took longer than the limit of {timeout_s:g} s"
        ) from exc


def check_k(k: int | None, max_k: int) -> None:
    if k is not None and k > max_k:
        raise ApiError(400, "limit_exceeded", f"k is at most {max_k} (service.max_k)")
