"""Fixtures shared by every test folder: an S3 API server on loopback (moto)."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest


def free_port() -> int:
    """A loopback TCP port that nothing listens on (closed again before returning)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 for the whole session.

    Yields LanceDB/object_store storage options (usable as ``StorageConfig.storage_options``
    and by ``storage.uri.s3_client``) plus ``endpoint``, the server's URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield {
        "aws_endpoint": endpoint,
        "allow_http": "true",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
        "endpoint": endpoint,
    }
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> Callable[..., str]:
    """Factory: ``make(prefix="vmem") -> bucket name`` creates a fresh empty bucket."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint"],
        aws_access_key_id=s3_server["aws_access_key_id"],
        aws_secret_access_key=s3_server["aws_secret_access_key"],
        region_name=s3_server["aws_region"],
    )

    def make(prefix: str = "vmem") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        return name

    return make
