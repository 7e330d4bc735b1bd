"""Batches over HTTP: ``POST /v1/batches`` -> a batch id; its state, progress and results.

A batch is the questions inline, or the URI (s3:// or a path on the server) of a JSONL
or Parquet file of them (``{question, id?, where?, k?}`` per line or row). Each runs in a
background thread of the replica that took it, through a ``BatchRunner``: on Ray Serve
the Prefect answer flow on the query actor pool (``flow_runner``), in-process the same
rows from the replica's own query stage (``stage_runner``). The rows are ``vmem
answer``'s (flows.answer.RESULT_SCHEMA), written to ``<db>/batches/<id>.parquet``.

The state of every batch is a row of the ``batches`` table of the database, so any
replica can answer ``GET /v1/batches/{id}``: queued -> running -> done | failed (with a
one-line error). A replica runs at most ``service.max_batches_running`` batches at once;
beyond that a new batch is refused with 429 and ``Retry-After``. A batch whose replica
stopped while it ran stays ``running`` (it is not resumed).
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from actors.query import QueryStage
from actors.runtime import BoundModel
from schemas.config import ServiceConfig, VMemConfig
from schemas.records import AnswerReport, Question
from service.bodies import MAX_QUESTION_CHARS
from service.errors import ApiError, public_message
from storage.archive import ArchiveError, read_file
from storage.db import open_table, sql_literal
from storage.uri import is_s3, join, s3_client, split_s3

log = logging.getLogger("vmem.service")

BATCHES = "batches"
BATCH_ID_PATTERN = r"^[0-9a-f]{16}$"
BatchState = Literal["queued", "running", "done", "failed"]
# questions file -> output Parquet -> whether to generate answers -> the batch's report
BatchRunner = Callable[[str, str, bool], AnswerReport]

BATCHES_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("state", pa.string()),
        pa.field("total", pa.int64()),  # questions, once known
        pa.field("done", pa.int64()),  # questions finished
        pa.field("answered", pa.int64()),
        pa.field("no_match", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("error", pa.string()),  # one line, for a failed batch
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


# ---- bodies ------------------------------------------------------------------------------
class BatchQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=r"\S")
    id: str | None = Field(None, max_length=200)
    where: str | None = Field(None, min_length=1)
    k: int | None = Field(None, ge=1)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[BatchQuestion] | None = Field(
        None, min_length=1, description="the questions inline (at most service.max_batch_questions)"
    )
    uri: str | None = Field(
        None,
        min_length=1,
        max_length=2_000,
        description="or an s3:// URI or server path of a JSONL or Parquet file of questions",
    )
    answer: bool = Field(False, description="also generate each question's answer")

    @model_validator(mode="after")
    def _one_source(self) -> BatchRequest:
        if (self.questions is None) == (self.uri is None):
            raise ValueError("give either `questions` or `uri`, not both")
        return self


class BatchCreated(BaseModel):
    batch_id: str
    state: BatchState


class BatchProgress(BaseModel):
    done: int | None = Field(None, description="questions finished")
    total: int | None = Field(None, description="questions in the batch, once read")


class BatchStatus(BaseModel):
    batch_id: str
    state: BatchState
    progress: BatchProgress
    answered: int | None = None
    no_match: int | None = None
    failed: int | None = None
    rows: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class BatchResults(BaseModel):
    columns: list[str]
    rows: list[dict]
    next_page_token: str | None = None


# ---- runners -----------------------------------------------------------------------------
def flow_runner(config: VMemConfig, bound: BoundModel) -> BatchRunner:
    """Batches through the Prefect answer flow on the Ray query actor pool."""

    def run(questions: str, output: str, answers: bool) -> AnswerReport:
        from flows.answer import answer_flow

        return answer_flow(questions, output, config, answers, bound=bound)

    return run


def stage_runner(
    ready: Callable[[], QueryStage], lock: threading.Lock | None = None
) -> BatchRunner:
    """Batches in this process on the stage ``ready()`` sets up: the answer flow's rows
    without Prefect or Ray. ``lock``: held while selecting (the answerer loads lazily)."""
    guard = lock or threading.Lock()

    def run(questions: str, output: str, answers: bool) -> AnswerReport:
        from flows.answer import QUESTIONS_PER_CALL, answer_report, read_questions, result_rows

        items = read_questions(questions, ready().storage_cfg.storage_options)
        todo = [q for q in items if isinstance(q, Question)]
        selected = []
        stage = ready()
        with guard:
            for start in range(0, len(todo), QUESTIONS_PER_CALL):
                selected += stage.select(todo[start : start + QUESTIONS_PER_CALL], answers)
        found = iter(selected)
        results = [next(found) if isinstance(q, Question) else q for q in items]
        table = result_rows(results)
        pq.write_table(table, output)
        return answer_report(results, table, output)

    return run


# ---- the batches table and files ---------------------------------------------------------
class BatchTable:
    """The ``batches`` table: one row per batch, its state and counts."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._lock = threading.Lock()  # one writer thread at a time per replica

    def _table(self, create: bool = False) -> Any | None:
        table = open_table(self.db, BATCHES)
        if table is None and create:
            table = self.db.create_table(BATCHES, schema=BATCHES_SCHEMA, exist_ok=True)
        return table

    def insert(self, batch_id: str, total: int | None) -> None:
        now = datetime.now(UTC)
        row = {"batch_id": batch_id, "state": "queued", "total": total, "done": 0}
        row |= {"created_at": now, "updated_at": now}
        with self._lock:
            self._table(create=True).add(pa.Table.from_pylist([row], schema=BATCHES_SCHEMA))

    def update(self, batch_id: str, **values: Any) -> None:
        values["updated_at"] = datetime.now(UTC)
        with self._lock:
            table = self._table(create=True)
            table.update(where=f"batch_id = {sql_literal(batch_id)}", values=values)

    def get(self, batch_id: str) -> dict | None:
        table = self._table()
        if table is None:
            return None
        query = table.search().where(f"batch_id = {sql_literal(batch_id)}").limit(1)
        rows = query.to_arrow().to_pylist()
        return rows[0] if rows else None


def _write_bytes(uri: str, data: bytes, storage_options: dict | None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client(storage_options).put_object(Bucket=bucket, Key=key, Body=data)
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(data)


def _questions_jsonl(questions: list[dict]) -> bytes:
    return "".join(json.dumps(q) + "\n" for q in questions).encode()


def uri_allowed(uri: str, prefixes: list[str]) -> bool:
    """Whether ``uri`` lies under one of ``prefixes`` (local paths resolved first, so
    ``..`` and symlinks cannot leave them)."""
    for prefix in prefixes:
        if is_s3(prefix) and is_s3(uri):
            if uri.startswith(prefix.rstrip("/") + "/"):
                return True
        elif not is_s3(prefix) and not is_s3(uri):
            root = Path(prefix).resolve()
            if Path(uri).resolve().is_relative_to(root):
                return True
    return False


def parquet_questions(uri: str, storage_options: dict | None) -> list[dict]:
    """The questions of a Parquet file: its ``question`` column (and ``id``, ``where``,
    ``k`` when present), as the JSONL lines the answer flow reads."""
    try:
        table = pq.read_table(pa.BufferReader(read_file(uri, storage_options)))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"question file is not a readable Parquet file: {exc}") from exc
    if "question" not in table.column_names:
        raise ValueError("question file has no `question` column")
    wanted = [c for c in ("question", "id", "where", "k") if c in table.column_names]
    rows = table.select(wanted).to_pylist()
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


# ---- the manager -------------------------------------------------------------------------
class Batches:
    """Takes batches, runs them in background threads (bounded), says how they stand."""

    def __init__(self, stage: QueryStage, cfg: ServiceConfig, runner: BatchRunner) -> None:
        self.stage, self.cfg, self.runner = stage, cfg, runner
        self.root = join(stage.storage_cfg.db, "batches")
        self.storage_options = stage.storage_cfg.storage_options
        self._slots = threading.BoundedSemaphore(cfg.max_batches_running)
        self._table: BatchTable | None = None
        self._hide = [stage.storage_cfg.db]

    @property
    def table(self) -> BatchTable:
        if self._table is None:
            self.stage.setup()
            assert self.stage.store is not None
            self._table = BatchTable(self.stage.store.db)
        return self._table

    def results_uri(self, batch_id: str) -> str:
        return join(self.root, f"{batch_id}.parquet")

    def submit(self, body: BatchRequest) -> BatchCreated:
        if body.questions is not None and len(body.questions) > self.cfg.max_batch_questions:
            raise ApiError(
                400,
                "limit_exceeded",
                f"a batch sent inline holds at most {self.cfg.max_batch_questions} questions "
                "(service.max_batch_questions): send a file's uri instead",
            )
        if body.uri is not None and not body.uri.endswith((".jsonl", ".parquet")):
            raise ApiError(400, "invalid_uri", "uri must name a .jsonl or .parquet file")
        if body.uri is not None and not uri_allowed(body.uri, self.cfg.batch_uri_prefixes):
            raise ApiError(
                403,
                "uri_not_allowed",
                "uri is outside the places batches may read (service.batch_uri_prefixes"
                + ("" if self.cfg.batch_uri_prefixes else ", none set: send questions inline")
                + ")",
            )
        if not self._slots.acquire(blocking=False):
            raise ApiError(
                429,
                "too_many_batches",
                f"this replica runs {self.cfg.max_batches_running} batches already: try later",
                {"Retry-After": "10"},
            )
        try:
            batch_id = secrets.token_hex(8)
            total = len(body.questions) if body.questions is not None else None
            self.table.insert(batch_id, total)
        except BaseException:
            self._slots.release()
            raise
        thread = threading.Thread(
            target=self._run, args=(batch_id, body), name=f"batch-{batch_id}", daemon=True
        )
        thread.start()
        return BatchCreated(batch_id=batch_id, state="queued")

    def _run(self, batch_id: str, body: BatchRequest) -> None:
        final: dict[str, Any]
        try:
            self.table.update(batch_id, state="running")
            with tempfile.TemporaryDirectory(prefix="vmem-batch-") as tmp:
                questions = self._questions_file(batch_id, body, Path(tmp))
                output = str(Path(tmp, "results.parquet"))
                report = self.runner(questions, output, body.answer)
                _write_bytes(
                    self.results_uri(batch_id), Path(output).read_bytes(), self.storage_options
                )
            final = {
                "state": "done",
                "total": report.questions,
                "done": report.questions,
                "answered": report.answered,
                "no_match": report.no_match,
                "failed": report.failed,
                "rows": report.rows,
            }
        except Exception as exc:  # noqa: BLE001 - whatever it was, the batch failed: say why
            log.warning("batch %s failed: %s", batch_id, exc)
            message = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ValueError | ArchiveError):  # QuestionFileError among them
                message = str(exc)
            final = {"state": "failed", "error": public_message(message, self._hide)}
        finally:
            self._slots.release()  # before the final state: whoever sees it may send another
        try:
            self.table.update(batch_id, **final)
        except Exception:  # noqa: BLE001 - the database itself is gone: logged
            log.exception("batch %s: its final state could not be recorded", batch_id)

    def _questions_file(self, batch_id: str, body: BatchRequest, tmp: Path) -> str:
        """A JSONL file the runner reads: the inline questions or the Parquet file's
        (in a local temp folder), or the client's JSONL file itself."""
        if body.questions is not None:
            lines = [q.model_dump(exclude_none=True) for q in body.questions]
        elif body.uri is not None and body.uri.endswith(".parquet"):
            lines = parquet_questions(body.uri, self.storage_options)
            self.table.update(batch_id, total=len(lines))
        else:
            assert body.uri is not None
            return body.uri
        path = tmp / "questions.jsonl"
        path.write_bytes(_questions_jsonl(lines))
        return str(path)

    def status(self, batch_id: str) -> BatchStatus:
        row = self.table.get(batch_id)
        if row is None:
            raise ApiError(404, "batch_not_found", f"no batch with id {batch_id!r}")
        return BatchStatus(
            batch_id=batch_id,
            state=row["state"],
            progress=BatchProgress(done=row["done"], total=row["total"]),
            **{k: row[k] for k in ("answered", "no_match", "failed", "rows", "error")},
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def results_bytes(self, batch_id: str) -> bytes:
        """The Parquet file of a batch that is done (404 unknown, 409 not done yet)."""
        state = self.status(batch_id)
        if state.state != "done":
            raise ApiError(
                409, "batch_not_done", f"batch {batch_id} is {state.state}: it has no results"
            )
        try:
            return read_file(self.results_uri(batch_id), self.storage_options)
        except ArchiveError as exc:
            raise ApiError(
                410, "results_gone", f"the results of batch {batch_id} are gone"
            ) from exc

    def results_page(self, batch_id: str, offset: int, page_size: int) -> pa.Table:
        table = pq.read_table(pa.BufferReader(self.results_bytes(batch_id)))
        return table.slice(offset, page_size + 1)
