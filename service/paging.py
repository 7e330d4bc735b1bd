"""Paging: opaque page tokens, and a page of a SQL statement as a statement of its own.

A token encodes the offset of the page it stands for and a fingerprint of the request it
belongs to (a token of one query is refused by another). A page of ``/v1/sql`` is the
client's statement with its LIMIT and OFFSET rewritten (sqlglot) to read that page and
one row more, which says whether another page follows: each page reads only its rows, so
a table of any size can be listed. The statement's own LIMIT bounds the whole result;
without one, every row is listed (with ``relevance()``, the ``MAX_LIMIT`` nearest).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlglot

from service.errors import ApiError
from storage.sql import MAX_LIMIT, compile_sql

MAX_TOKEN_OFFSET = 10**9


def fingerprint(*parts: Any) -> str:
    """What a page token is bound to: the request's own parameters (a token of one query
    is refused by another)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def page_token(offset: int, bound_to: str) -> str:
    """An opaque token for the page that starts at ``offset``."""
    raw = json.dumps({"o": offset, "q": bound_to}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_offset(token: str | None, bound_to: str) -> int:
    """The offset a token of this request stands for (0 without one); 400 otherwise."""
    if token is None:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, query = data["o"], data["q"]
    except (ValueError, TypeError, KeyError) as exc:
        raise _bad_token() from exc
    if query != bound_to or not isinstance(offset, int) or not 0 <= offset < MAX_TOKEN_OFFSET:
        raise _bad_token()
    return offset


def _bad_token() -> ApiError:
    return ApiError(
        400,
        "invalid_page_token",
        "the page token is not one this endpoint gave for this request: send the request "
        "again without it to start from the first page",
    )


@dataclass(frozen=True)
class SqlPage:
    statement: str  # the client's statement, reading this page and one row more
    rows: int  # rows this page shows at most
    last: bool  # no page can follow (the statement's LIMIT ends with this one)


def sql_page(text: str, offset: int, page_size: int) -> SqlPage:
    """The statement that reads rows ``offset`` .. ``offset + page_size`` of ``text``'s
    result (SqlError, naming the problem, when ``text`` is not in the SQL subset)."""
    compiled = compile_sql(text)  # checks everything first
    stmt = sqlglot.parse_one(text)
    limit = compiled.limit if stmt.args.get("limit") else None
    if limit is None and compiled.relevance is not None:
        limit = MAX_LIMIT - compiled.offset  # relevance() finds at most MAX_LIMIT clips
    rows, last = page_size, False
    if limit is not None:
        rows = max(0, min(page_size, limit - offset))
        last = offset + rows >= limit
    fetch = rows if last else rows + 1  # page_size < MAX_LIMIT (ServiceConfig)
    page = stmt.limit(max(fetch, 1)).offset(compiled.offset + offset)
    return SqlPage(page.sql(), rows, last)
