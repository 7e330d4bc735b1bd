"""Fixtures shared by every test folder: an S3 API server on loopback (moto), the tiny
default model and random uint8 clips."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest
import torch

from checkpoints.registry import build_default_model
from models.vmem import VMemModel


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


@pytest.fixture(scope="session")
def s3_client(s3_server):
    """A boto3 S3 client of moto's server (to upload test archives)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint"],
        aws_access_key_id=s3_server["aws_access_key_id"],
        aws_secret_access_key=s3_server["aws_secret_access_key"],
        region_name=s3_server["aws_region"],
    )


@pytest.fixture(scope="session")
def s3_bucket(s3_client) -> Callable[..., str]:
    """Factory: ``make(prefix="vmem") -> bucket name`` creates a fresh empty bucket."""

    def make(prefix: str = "vmem") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        s3_client.create_bucket(Bucket=name)
        return name

    return make


@pytest.fixture(scope="session")
def model() -> VMemModel:
    """The tiny default model (seed 0), eval mode; tests must not modify it."""
    return build_default_model(seed=0)


@pytest.fixture
def make_clips():
    """make_clips(batch, seed, frames=16, size=64) -> (B, T, size, size, 3) uint8."""

    def make(batch: int, seed: int, frames: int = 16, size: int = 64) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        shape = (batch, frames, size, size, 3)
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)

    return make
