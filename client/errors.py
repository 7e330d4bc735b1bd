"""The errors of the Python API: one line each, meant for people, never a raw Lance,
Rust or HTTP error. The CLI prints them as they are and exits with ``exit_code``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.config import StorageConfig

EXIT_USAGE, EXIT_STORAGE = 2, 4  # the CLI's exit codes (`vmem ingest --help`)


class VMemError(Exception):
    """Something the caller can fix or retry, said in one line."""

    exit_code = EXIT_USAGE


class QueryError(VMemError):
    """A question, WHERE predicate, SQL statement or question file that cannot run."""


class DatabaseError(VMemError):
    """No database there, no memories in it yet, or a --as-of point it does not have."""


class ModelError(VMemError):
    """The model cannot be loaded, or has no answerer for ``answer=True``."""


class StorageFailure(VMemError):
    """The database could not be reached or read (after bounded retries); try again."""

    exit_code = EXIT_STORAGE


class ServiceError(VMemError):
    """The HTTP API answered with an error (``status`` and its machine ``code``) or could
    not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0, code: str = "unreachable") -> None:
        super().__init__(message)
        self.status, self.code = status, code


class AuthError(ServiceError):
    """The HTTP API refused the key: missing or wrong (401) or of too small a scope (403)."""


@contextmanager
def storage_errors(storage: StorageConfig) -> Iterator[None]:
    """Storage failures as one line, credentials redacted (as the CLI says them): an
    unknown --as-of point is a DatabaseError, the rest a StorageFailure."""
    from storage.db import StorageError
    from storage.uri import ObjectStoreError, object_store_message, redact
    from storage.versions import VersionError

    options = storage.storage_options
    try:
        yield
    except VMemError:
        raise
    except VersionError as exc:
        raise DatabaseError(redact(str(exc), options)) from exc
    except (StorageError, ObjectStoreError) as exc:
        raise StorageFailure(redact(str(exc), options)) from exc
    except (ValueError, OSError, RuntimeError) as exc:  # LanceDB's object-store errors
        message = object_store_message(exc, storage.db, options)
        if message is None:
            raise
        raise StorageFailure(message) from exc
