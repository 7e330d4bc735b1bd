"""The Python API: ``Archive`` (an archive's database, in this process) and
``HttpClient`` (the search service over HTTP), with the same methods and errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client.errors import (
    AuthError,
    DatabaseError,
    ModelError,
    QueryError,
    ServiceError,
    StorageFailure,
    VMemError,
)
from client.http import HttpClient
from client.results import AskResult, ClipHit, VideoHit

if TYPE_CHECKING:
    from client.archive import Archive

__all__ = [
    "Archive",
    "AskResult",
    "AuthError",
    "ClipHit",
    "DatabaseError",
    "HttpClient",
    "ModelError",
    "QueryError",
    "ServiceError",
    "StorageFailure",
    "VMemError",
    "VideoHit",
]


def __getattr__(name: str) -> Any:
    """``Archive`` is imported on first use: it loads torch, Ray and LanceDB, which a
    program that only talks HTTP does not need."""
    if name == "Archive":
        from client.archive import Archive

        return Archive
    raise AttributeError(f"module 'client' has no attribute {name!r}")
