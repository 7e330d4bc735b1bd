"""Storage chosen by URI, in one place: a local path or ``s3://bucket/key``.

Everything else in VMem passes URIs and a ``storage_options`` dict around; only this module
knows how those turn into LanceDB (object_store) options or a boto3 client.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from schemas.config import REDACTED

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

# Retries and timeouts, for LanceDB's object store and boto3 alike: bounded, with backoff
# (object_store: exponential backoff with jitter; botocore: "standard" retry mode), low
# enough that an unreachable endpoint fails in seconds, not minutes. Keys are LanceDB's own
# storage_options names, so a config's ``storage_options`` overrides them for both clients.
RETRY_DEFAULTS = {
    "client_max_retries": "3",  # retries after the first try of one request
    "client_retry_timeout": "30",  # seconds: no retry starts later than this after the first
    "connect_timeout": "3s",  # TCP connect of one try
    "timeout": "60s",  # one try, from connect until the body is read (a slow endpoint)
}
# Options whose values are credentials: never printed, logged or stored (see ``redact``).
SECRET_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


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
    opts = {
        _ALIASES.get(k, k): str(v)
        for k, v in (storage_options or {}).items()
        if v is not None and v != REDACTED  # a credential a JSON dump hid: take the environment
    }
    for key, env_names in _ENV.items():
        if key in opts:
            continue
        value = next((os.environ[n] for n in env_names if os.environ.get(n)), None)
        if value is not None:
            opts[key] = value
    if opts.get("aws_endpoint", "").startswith("http://") and "allow_http" not in opts:
        opts["allow_http"] = "true"
    for key, value in RETRY_DEFAULTS.items():
        opts.setdefault(key, value)
    return opts


def seconds(value: str) -> float:
    """A duration as object_store writes it (``"3s"``, ``"500ms"``, ``"2m"``, ``"30"``) in s."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*", str(value))
    if match is None:
        raise ValueError(f"not a duration: {value!r} (write e.g. 3s, 500ms)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * scale


def endpoint_of(storage_options: dict[str, Any] | None) -> str:
    """The S3 endpoint these options talk to, for messages."""
    return lance_options(storage_options).get("aws_endpoint") or "the default AWS endpoint"


def redact(text: str, storage_options: dict[str, Any] | None = None) -> str:
    """``text`` with every credential replaced by ``***``: the key id, secret key and session
    token of ``storage_options`` and of the AWS_* environment, and anything written as
    ``secret_access_key=...`` / ``"aws_session_token": "..."`` or a presigned URL's signature.

    Values shorter than 4 characters are left alone (replacing "x" everywhere would garble the
    message without protecting anything)."""
    opts = lance_options(storage_options)
    secrets = {opts.get(key, "") for key in SECRET_KEYS}
    secrets |= {os.environ.get(name, "") for key in SECRET_KEYS for name in _ENV[key]}
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _SECRET_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)


_SECRET_PATTERN = re.compile(
    r"((?:aws_)?(?:secret_access_key|session_token|access_key_id|security_token)['\"]?\s*[:=]\s*"
    r"(?:Some\()?['\"]?|X-Amz-(?:Signature|Credential|Security-Token)=)[^'\"\s,&)}]+",
    re.IGNORECASE,
)


class ObjectStoreError(RuntimeError):
    """An object store that cannot be reached or used; the message is one line."""


def probe_s3(uri: str, storage_options: dict[str, Any] | None) -> None:
    """One cheap request (list one key under ``uri``), so that an unreachable endpoint, a
    missing bucket or refused keys are one clear ObjectStoreError before a run starts."""
    bucket, key = split_s3(uri)
    try:
        s3_client(storage_options).list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as exc:  # botocore's errors, after its bounded retries
        message = object_store_message(exc, uri, storage_options)
        if message is None:
            message = f"s3 error on {uri} (endpoint {endpoint_of(storage_options)}): {exc}"
        raise ObjectStoreError(redact(message, storage_options)) from exc


def object_store_message(
    exc: BaseException, uri: str, storage_options: dict[str, Any] | None
) -> str | None:
    """One line for an object-store failure of LanceDB (a Rust error struct) or boto3 on
    ``uri``: the endpoint could not be reached, the bucket is missing, access was denied.
    None when ``exc`` is not one of those (a bug: let it raise)."""
    text = str(exc)
    endpoint = endpoint_of(storage_options)
    reason = next((why for sign, why in _UNREACHABLE.items() if sign in text), None)
    if reason is not None:
        return redact(f"cannot reach s3 endpoint {endpoint} for {uri} ({reason})", storage_options)
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return f"bucket not found: s3://{split_s3(uri)[0]} (endpoint {endpoint}, for {uri})"
    if any(code in text for code in _DENIED):
        code = next(c for c in _DENIED if c in text)
        return f"access denied to {uri} by s3 endpoint {endpoint}: {code}"
    return None


# How LanceDB's object store (reqwest/hyper) and botocore say that nobody answered, and
# the reason a message gives for each (the first sign found wins).
_UNREACHABLE = {
    "ConnectionRefused": "connection refused",
    "Could not connect to the endpoint URL": "connection refused",
    "Connect timeout": "connect timeout",
    "ConnectTimeout": "connect timeout",
    "Read timeout on endpoint URL": "read timeout",
    "TimedOut": "timeout",
    "kind: Timeout": "timeout",
    "operation timed out": "timeout",
    "dns error": "dns error",
    "tcp connect error": "connection failed",
    "error sending request": "request failed",
    "connection closed before message completed": "connection closed",
}
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden")


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
        connect_timeout=seconds(opts["connect_timeout"]),
        read_timeout=seconds(opts["timeout"]),
        # botocore's standard mode: exponential backoff with jitter, retries throttling,
        # 5xx and connection errors; max_attempts counts the first try
        retries={"total_max_attempts": 1 + int(opts["client_max_retries"]), "mode": "standard"},
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
