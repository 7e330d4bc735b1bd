"""Batches over HTTP, in-process: inline questions or a file, state and progress, results
paged as JSON or whole as Parquet (the rows of `vmem answer`), write scope, bad input."""

from __future__ import annotations

import io
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq

from flows.answer import result_rows
from schemas.records import Question

QUESTIONS = [
    {"question": "where does the red circle move?", "id": "red"},
    {"question": "what is blue?", "id": "blue", "k": 1},
    {"question": "anything at all", "id": "none", "where": "clip_index > 1000"},
]


def _wait(service, batch_id: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        response = service.client.get(f"/v1/batches/{batch_id}", headers=service.read)
        assert response.status_code == 200, response.text
        state = response.json()
        if state["state"] in ("done", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def _submit(service, body: dict) -> str:
    response = service.client.post("/v1/batches", json=body, headers=service.write)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "queued"
    return response.json()["batch_id"]


def _pages(service, batch_id: str) -> tuple[list[dict], int]:
    rows, pages, token = [], 0, None
    while True:
        params = {"page_token": token} if token else {}
        response = service.client.get(
            f"/v1/batches/{batch_id}/results", params=params, headers=service.read
        )
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body["rows"]
        pages += 1
        token = body["next_page_token"]
        if token is None:
            return rows, pages


def _expected(stage) -> list[dict]:
    """The rows `vmem answer` makes of the same questions (flows.answer.result_rows)."""
    stage.setup()
    results = stage.select([Question(**q) for q in QUESTIONS])
    return result_rows(results).to_pylist()


KEY = ("question_id", "status", "rank", "video_id", "clip_index")


def test_inline_batch_runs_to_done_with_the_rows_of_vmem_answer(media_db):
    service = media_db.service
    batch_id = _submit(service, {"questions": QUESTIONS})
    state = _wait(service, batch_id)
    assert state["state"] == "done", state
    want = _expected(media_db.stage)
    assert state["progress"] == {"done": 3, "total": 3}
    assert (state["answered"], state["no_match"], state["failed"]) == (2, 1, 0)
    assert state["rows"] == len(want)
    rows, pages = _pages(service, batch_id)
    assert pages == -(-len(want) // 2)  # page_size 2
    assert [tuple(r[k] for k in KEY) for r in rows] == [tuple(r[k] for k in KEY) for r in want]
    for got, expected in zip(rows, want, strict=True):
        if expected["score"] is not None:
            assert abs(got["score"] - expected["score"]) < 1e-5
        assert got["uri"] is None or "/" not in got["uri"]  # a server path: its file name
    whole = service.client.get(
        f"/v1/batches/{batch_id}/results", params={"format": "parquet"}, headers=service.read
    )
    assert whole.status_code == 200
    table = pq.read_table(io.BytesIO(whole.content))
    assert table.num_rows == len(want) and "question_id" in table.column_names


def test_a_file_of_questions_jsonl_or_parquet(media_db, tmp_path):
    service = media_db.service
    jsonl = tmp_path / "questions.jsonl"
    jsonl.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS) + "not json\n")
    parquet = tmp_path / "questions.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": q["question"]} for q in QUESTIONS]), parquet)
    from_jsonl = _wait(service, _submit(service, {"uri": str(jsonl)}))
    assert from_jsonl["state"] == "done", from_jsonl
    assert from_jsonl["progress"]["total"] == 4 and from_jsonl["failed"] == 1  # the bad line
    from_parquet = _wait(service, _submit(service, {"uri": str(parquet)}))
    assert from_parquet["state"] == "done", from_parquet
    assert from_parquet["progress"] == {"done": 3, "total": 3}


def test_a_bad_uri_fails_the_batch_in_one_line_without_server_paths(media_db, tmp_path):
    service = media_db.service
    state = _wait(service, _submit(service, {"uri": str(tmp_path / "missing.jsonl")}))
    assert state["state"] == "failed"
    error = state["error"]
    assert "not found" in error and "\n" not in error and str(tmp_path) not in error
    response = service.client.get(f"/v1/batches/{state['batch_id']}/results", headers=service.read)
    assert response.status_code == 409 and response.json()["error"]["code"] == "batch_not_done"


def test_batches_need_a_write_key_and_valid_input(media_db):
    service = media_db.service
    post = lambda body, headers: service.client.post("/v1/batches", json=body, headers=headers)  # noqa: E731
    refused = post({"questions": QUESTIONS}, service.read)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert post({"questions": QUESTIONS}, {}).status_code == 401
    both = post({"questions": QUESTIONS, "uri": "s3://b/q.jsonl"}, service.write)
    assert both.status_code == 422
    assert post({"uri": "/etc/passwd"}, service.write).status_code == 400
    # a write key cannot make the server read its own files (nor escape the allowed folder)
    for outside in ("/etc/vmem.jsonl", "/tmp/../etc/q.parquet", "s3://other/q.jsonl"):
        answer = post({"uri": outside}, service.write)
        assert answer.status_code == 403, outside
        assert answer.json()["error"]["code"] == "uri_not_allowed"
    unknown = service.client.get("/v1/batches/0123456789abcdef", headers=service.read)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "batch_not_found"
    bad_id = service.client.get("/v1/batches/..%2Fx", headers=service.read)
    assert bad_id.status_code in (404, 422)


def test_inline_size_and_running_batches_are_bounded(tiny_db):
    import threading

    from fastapi.testclient import TestClient

    from actors.query import QueryStage
    from schemas.config import ServiceConfig
    from schemas.records import AnswerReport
    from service.app import create_app
    from service.auth import KeyStore

    release = threading.Event()

    def held(questions: str, output: str, answers: bool) -> AnswerReport:
        release.wait(10)  # a batch that runs until the test lets it finish
        pq.write_table(pa.table({"question_id": ["q1"]}), output)
        return AnswerReport(questions=1, answered=1, rows=1)

    cfg = ServiceConfig(max_batch_questions=2, max_batches_running=1)
    stage = QueryStage(tiny_db.checkpoint, tiny_db.encoder, tiny_db.cfg.storage, tiny_db.cfg.query)
    keys = KeyStore(tiny_db.cfg.storage)
    headers = {"Authorization": f"Bearer {keys.create('write').key}"}
    client = TestClient(create_app(stage, cfg, keys, held))
    too_many = client.post("/v1/batches", json={"questions": QUESTIONS}, headers=headers)
    assert too_many.status_code == 400 and "at most 2 questions" in too_many.text
    first = client.post("/v1/batches", json={"questions": QUESTIONS[:1]}, headers=headers)
    assert first.status_code == 202
    busy = client.post("/v1/batches", json={"questions": QUESTIONS[:1]}, headers=headers)
    assert busy.status_code == 429 and busy.headers["Retry-After"]
    assert busy.json()["error"]["code"] == "too_many_batches"
    release.set()
    state: dict = {}
    for _ in range(200):
        state = client.get(f"/v1/batches/{first.json()['batch_id']}", headers=headers).json()
        if state["state"] == "done":
            break
        time.sleep(0.05)
    assert state["state"] == "done" and state["rows"] == 1
    again = client.post("/v1/batches", json={"questions": QUESTIONS[:1]}, headers=headers)
    assert again.status_code == 202  # the slot is free again
