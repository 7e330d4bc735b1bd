"""API keys: made by ``vmem keys create``, sent as ``Authorization: Bearer <key>``.

A key reads ``vmem_<key id>_<secret>``. The key id is public (``vmem keys list`` shows
it, ``vmem keys revoke`` takes it); the secret is 32 random bytes and is never stored:
the ``api_keys`` table of the database (so a database on s3:// carries its keys too)
holds the scope, a per-key random salt and sha256(salt + secret). A slow password hash
(scrypt, bcrypt) exists to make guessing a *human-chosen* secret expensive; guessing a
256-bit random one is out of reach at any hash speed, so a fast hash loses nothing and
keeps each request's check to a microsecond.

Scopes: ``read`` (search, sql, videos, metrics, the OpenAPI document) and ``write``
(batches), which includes read. A replica re-reads the table every
``service.keys_refresh_s`` seconds, so a revoked key stops working within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import pyarrow as pa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from schemas.config import StorageConfig
from service.errors import ApiError
from storage.db import connect, open_table, sql_literal

API_KEYS = "api_keys"
SCOPES = ("read", "write")
IMPLIED = {"read": {"read"}, "write": {"read", "write"}}  # what a key of each scope may do
PREFIX = "vmem"
KEY_ID = re.compile(r"[0-9a-f]{12}")
UNKNOWN_RETRY_S = 0.5  # an unknown key id re-reads the table at most this often: a new key
# works within this time, and keys made up by a client cannot make a replica re-read faster

API_KEYS_SCHEMA = pa.schema(
    [
        pa.field("key_id", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),
        pa.field("salt", pa.string(), nullable=False),  # hex of 16 random bytes
        pa.field("secret_hash", pa.string(), nullable=False),  # sha256(salt + secret), hex
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("revoked_at", pa.timestamp("us", tz="UTC")),
    ]
)


class KeyStoreError(ValueError):
    """A key that cannot be made or revoked; the message names the problem."""


@dataclass(frozen=True)
class NewKey:
    key_id: str
    scope: str
    key: str  # the whole key, shown once


@dataclass(frozen=True)
class _StoredKey:
    scope: str
    salt: str
    secret_hash: str


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not KEY_ID.fullmatch(key_id) or len(secret) < 32:
        return None
    return key_id, secret


class KeyStore:
    """The ``api_keys`` table of one database, and a cache of it for request checks."""

    def __init__(self, storage: StorageConfig, refresh_s: float = 10.0, db: Any = None) -> None:
        self.db = db if db is not None else connect(storage)
        self.refresh_s = refresh_s
        self._keys: dict[str, _StoredKey] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _table(self, create: bool = False) -> Any | None:
        table = open_table(self.db, API_KEYS)
        if table is None and create:
            table = self.db.create_table(API_KEYS, schema=API_KEYS_SCHEMA, exist_ok=True)
        return table

    # ---- the CLI's side ------------------------------------------------------------------
    def create(self, scope: str) -> NewKey:
        if scope not in SCOPES:
            raise KeyStoreError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        key_id, secret, salt = (
            secrets.token_hex(6),
            secrets.token_urlsafe(32),
            secrets.token_hex(16),
        )
        row = {
            "key_id": key_id,
            "scope": scope,
            "salt": salt,
            "secret_hash": _hash(salt, secret),
            "created_at": datetime.now(UTC),
            "revoked_at": None,
        }
        self._table(create=True).add(pa.Table.from_pylist([row], schema=API_KEYS_SCHEMA))
        return NewKey(key_id, scope, f"{PREFIX}_{key_id}_{secret}")

    def revoke(self, key_id: str) -> None:
        """Mark a key revoked (its row stays, for the record)."""
        table = self._table()
        where = f"key_id = {sql_literal(key_id)}"
        if not KEY_ID.fullmatch(key_id) or table is None or table.count_rows(where) == 0:
            raise KeyStoreError(f"no API key with id {key_id!r} (vmem keys list shows them)")
        table.update(where=f"{where} AND revoked_at IS NULL", values={"revoked_at": _now()})

    def list(self) -> list[dict]:
        """Every key's id, scope and times (no hashes)."""
        table = self._table()
        if table is None:
            return []
        columns = ["key_id", "scope", "created_at", "revoked_at"]
        rows = table.search().select(columns).limit(None).to_arrow().to_pylist()
        return sorted(rows, key=lambda r: r["created_at"])

    # ---- the service's side --------------------------------------------------------------
    def scope_of(self, key: str) -> str | None:
        """The scope of a valid, unrevoked key; None for any other string."""
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        stored = self._cached(key_id)
        if stored is None or not hmac.compare_digest(
            stored.secret_hash, _hash(stored.salt, secret)
        ):
            return None
        return stored.scope

    def _cached(self, key_id: str) -> _StoredKey | None:
        age = time.monotonic() - self._loaded_at
        if age > self.refresh_s or (key_id not in self._keys and age > UNKNOWN_RETRY_S):
            self._reload()
        return self._keys.get(key_id)

    def _reload(self) -> None:
        with self._lock:
            table = self._table()
            keys: dict[str, _StoredKey] = {}
            if table is not None:
                rows = table.search().where("revoked_at IS NULL").limit(None).to_arrow()
                for row in rows.to_pylist():
                    keys[row["key_id"]] = _StoredKey(row["scope"], row["salt"], row["secret_hash"])
            self._keys, self._loaded_at = keys, time.monotonic()


def _now() -> datetime:
    return datetime.now(UTC)


# ---- the FastAPI dependency --------------------------------------------------------------
bearer = HTTPBearer(auto_error=False, description="an API key made by `vmem keys create`")


def require(scope: str):
    """A dependency that lets a request through only with a key of ``scope`` (or wider)."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        if credentials is None:
            raise ApiError(
                401,
                "missing_key",
                "send an API key as `Authorization: Bearer <key>` (`vmem keys create`)",
                {"WWW-Authenticate": "Bearer"},
            )
        keys: KeyStore = request.app.state.keys
        granted = keys.scope_of(credentials.credentials)
        if granted is None:
            raise ApiError(
                401,
                "invalid_key",
                "the API key is not valid or was revoked",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope not in IMPLIED[granted]:
            raise ApiError(
                403, "forbidden", f"this endpoint needs a key of scope {scope}; yours is {granted}"
            )
        return granted

    return check
