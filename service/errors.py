"""Errors as JSON, everywhere: ``{"error": {"code": "...", "message": "..."}}``.

Every failure a client can meet (a route's own, routing's 404/405, a body that does not
validate, an unexpected exception) leaves through these handlers. A message is one line
of at most ``MESSAGE_CHARS`` characters with server paths and source locations removed,
and never quotes the client's input whole; a 500 says only that it was logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("vmem.service")

MESSAGE_CHARS = 300
# /an/absolute/path (two parts at least), file:// URLs, and Rust or Python source locations
_PATHS = re.compile(r"(file://)?(?<![\w.:/])/(?:[\w.@+-]+/)+[\w.@+-]*")
_SOURCE_LOCATIONS = re.compile(r"[\w./-]*\.(rs|py):\d+(:\d+)?")
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """A failure with its HTTP status, a stable machine code and a message for people."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def public_message(text: str, hide: Iterable[str] = ()) -> str:
    """``text`` fit for a client: its first line, the ``hide`` strings (the database URI,
    archive roots) and any other absolute path or source location replaced, cut short."""
    line = (text.strip().splitlines() or [""])[0]
    for secret in sorted((h for h in hide if h), key=len, reverse=True):
        line = line.replace(secret, "<database>" if "://" in secret else "<server path>")
    line = _SOURCE_LOCATIONS.sub("<source>", line)
    line = _PATHS.sub("<server path>", line)
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 3] + "..."


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _count(request: Request, code: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_error(code)


def _validation_message(exc: RequestValidationError) -> str:
    """Where and what, per problem; the offending input itself is left out (it may be
    megabytes: a field name, too, is cut short)."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p)[:40] for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error of ``app`` to the JSON envelope."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        _count(request, exc.code)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 404:
            message = "no such endpoint (the API is under /v1; see /v1/openapi.json)"
        elif exc.status_code == 405:
            message = f"method {request.method[:10]} is not allowed on this endpoint"
        else:
            message = public_message(str(exc.detail))
        _count(request, code)
        return error_response(exc.status_code, code, message, dict(exc.headers or {}) or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count(request, "invalid_request")
        return error_response(422, "invalid_request", public_message(_validation_message(exc)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path[:200])
        _count(request, "internal")
        return error_response(500, "internal", "internal error (logged on the server)")
