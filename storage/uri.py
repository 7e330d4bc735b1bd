"""Storage chosen by URI, in one place: a local path or ``s3://bucket/key``.

Everything else in VMem passes URIs and a ``storage_options`` dict around; only this module
knows how those turn into LanceDB (object_store) options or a boto3 client.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

S3_SCHEME = "s3://"

# LanceDB / object_store keys, and the environment variables that fill them when absent.
_ENV = {
    "aws_endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
    "allow_http": ("AWS_ALLOW_HTTP",),
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
    "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
}
# Other spellings people write in config files, mapped to the object_store key.
_ALIASES = {
    "endpoint": "aws_endpoint",
    "endpoint_url": "aws_endpoint",
    "aws_endpoint_url": "aws_endpoint",
    "region": "aws_region",
    "region_name": "aws_region",
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "session_token": "aws_session_token",
}

# boto3 timeouts: low enough that an unreachable endpoint fails in seconds, not minutes.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 2


def is_s3(uri: str) -> bool:
    """True for ``s3://`` URIs; everything else is a local path."""
    return str(uri).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")`` (the key may be empty)."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or an ``s3://`` URI."""
    if not is_s3(uri):
        return str(Path(uri, *parts))
    pieces = [uri.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
    return "/".join(pieces)


def lance_options(storage_options: dict[str, Any] | None) -> dict[str, str]:
    """The object_store options LanceDB needs, filled from the AWS_* environment when absent.

    ``allow_http`` is set for an ``http://`` endpoint: without it object_store refuses to
    connect (a loopback S3 server, MinIO)."""
    opts = {_ALIASES.get(k, k): str(v) for k, v in (storage_options or {}).items() if v is not None}
    for key, env_names in _ENV.items():
        if key in opts:
            continue
        value = next((os.environ[n] for n in env_names if os.environ.get(n)), None)
        if value is not None:
            opts[key] = value
    if opts.get("aws_endpoint", "").startswith("http://") and "allow_http" not in opts:
        opts["allow_http"] = "true"
    return opts


def s3_client(storage_options: dict[str, Any] | None = None) -> Any:
    """A boto3 S3 client for the same endpoint, keys and region as the LanceDB options."""
    opts = lance_options(storage_options)
    return _cached_client(tuple(sorted(opts.items())))


@lru_cache(maxsize=16)
def _cached_client(items: tuple[tuple[str, str], ...]) -> Any:
    # boto3 clients are thread-safe and cost ~50 ms to build: one per distinct option set.
    import boto3
    from botocore.config import Config

    opts = dict(items)
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=32,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=opts.get("aws_endpoint"),
        aws_access_key_id=opts.get("aws_access_key_id"),
        aws_secret_access_key=opts.get("aws_secret_access_key"),
        aws_session_token=opts.get("aws_session_token"),
        region_name=opts.get("aws_region"),
        config=config,
    )
