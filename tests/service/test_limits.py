"""Limits: request bodies (declared or streamed) over the limit are 413, a request that
runs past the timeout is 504, k and page tokens are checked."""

from __future__ import annotations

import time

import anyio
import pytest
from fastapi.testclient import TestClient

from schemas.config import ServiceConfig, StorageConfig
from service.app import create_app
from service.auth import KeyStore
from service.errors import ApiError
from service.limits import within_time
from service.paging import page_offset, page_token, sql_page
from storage.sql import SqlError, compile_sql

from .conftest import make_service

LIMIT = 4096


@pytest.fixture(scope="module")
def small(tiny_db):
    return make_service(tiny_db, body_limit_bytes=LIMIT, max_k=3)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(small):
    big = {"question": "q", "where": "x" * (LIMIT * 4)}
    response = small.client.post("/v1/search", json=big, headers=small.read)
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "body_too_large",
        "message": f"the request body is larger than the limit of {LIMIT} bytes",
    }
    text = small.client.get("/metrics", headers=small.read).text
    assert 'vmem_http_errors_total{code="body_too_large"}' in text


def test_a_streamed_body_is_counted_and_refused_once_past_the_limit(small):
    sent = []

    def chunks():  # no Content-Length: chunked transfer
        for _ in range(64):
            sent.append(1)
            yield b'{"question": "' + b"y" * 1024

    headers = {**small.read, "Content-Type": "application/json"}
    response = small.client.post("/v1/search", content=chunks(), headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_a_body_within_the_limit_goes_through(small):
    response = small.client.post("/v1/search", json={"question": "q", "k": 3}, headers=small.read)
    assert response.status_code == 200, response.text


def test_k_over_the_cap_is_a_400_naming_the_cap(small):
    response = small.client.post("/v1/search", json={"question": "q", "k": 4}, headers=small.read)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "limit_exceeded",
        "message": "k is at most 3 (service.max_k)",
    }


class _SlowStage:
    checkpoint, encoder = "/nowhere/model", "x@1"
    storage_cfg = StorageConfig(db="/nowhere/db")
    model = object()

    def setup(self):
        pass

    def select(self, questions):
        time.sleep(2.0)
        return []


def test_a_request_past_the_timeout_is_answered_504_at_the_deadline(tiny_db):
    keys = KeyStore(tiny_db.cfg.storage)
    client = TestClient(create_app(_SlowStage(), ServiceConfig(timeout_s=0.3), keys))
    headers = {"Authorization": f"Bearer {keys.create('read').key}"}
    started = time.perf_counter()
    response = client.post("/v1/search", json={"question": "q"}, headers=headers)
    assert time.perf_counter() - started < 1.5
    assert response.status_code == 504
    assert response.json()["error"] == {
        "code": "timeout",
        "message": "the request took longer than the limit of 0.3 s",
    }


def test_within_time_returns_the_result_in_time():
    assert anyio.run(within_time, 5.0, lambda: 42) == 42
    with pytest.raises(ApiError) as raised:
        anyio.run(within_time, 0.05, lambda: time.sleep(0.5))
    assert raised.value.status == 504


def test_page_tokens_round_trip_and_refuse_tampering():
    token = page_token(40, "abc")
    assert page_offset(token, "abc") == 40 and page_offset(None, "abc") == 0
    for bad, bound in [
        (token, "other"),
        ("!!!", "abc"),
        (page_token(-1, "abc"), "abc"),
        (page_token(10**12, "abc"), "abc"),
    ]:
        with pytest.raises(ApiError) as raised:
            page_offset(bad, bound)
        assert raised.value.status == 400 and raised.value.code == "invalid_page_token"


def test_a_sql_page_reads_its_rows_and_one_more():
    page = sql_page("SELECT video_id FROM memories WHERE t_start > 1", 40, 20)
    assert page.statement.endswith("LIMIT 21 OFFSET 40") and page.rows == 20 and not page.last
    bounded = sql_page("SELECT video_id FROM memories LIMIT 50 OFFSET 5", 40, 20)
    assert bounded.statement.endswith("LIMIT 10 OFFSET 45") and bounded.rows == 10
    assert bounded.last
    nearest = sql_page("SELECT video_id FROM memories ORDER BY relevance('q')", 9_990, 20)
    assert nearest.rows == 10 and nearest.last  # relevance() finds at most 10,000
    far = sql_page("SELECT video_id FROM memories", 2_000_000, 20).statement
    with pytest.raises(SqlError, match="OFFSET must be between 0 and 1,000,000"):
        compile_sql(far)  # what the query stage says of it: a 400 naming the limit
