"""Property-based: schemathesis generates requests from /v1/openapi.json (valid ones and
ones that break the schema) and sends them with a read key to the app in-process over
the tiny database. None may be answered with a 5xx; every error is the JSON envelope."""

from __future__ import annotations

import time

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

REQUESTS = 1_000


def test_no_generated_request_gets_a_server_error(service):
    schema = schemathesis.openapi.from_asgi(
        "/v1/openapi.json", service.client.app, headers=service.read
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/search", "/v1/sql", "/v1/videos"}
    strategy = st.one_of([op.as_strategy(mode) for op in operations for mode in GenerationMode])
    seen: dict[int, int] = {}
    started = time.perf_counter()

    @settings(
        max_examples=REQUESTS,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def one_request(case):
        response = case.call(headers=service.read)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}, response.text[:300]

    one_request()
    assert sum(seen.values()) >= REQUESTS, seen
    assert any(200 <= status < 300 for status in seen) and any(s >= 400 for s in seen), seen
    print(f"{sum(seen.values())} requests in {time.perf_counter() - started:.1f} s: {seen}")
