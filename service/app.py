"""The search service's FastAPI app over one query stage: versioned endpoints under /v1.

    POST /v1/search    {question, where?, k?, answer?, page_token?} -> clips per video
    POST /v1/sql       {query, page_token?}                        -> rows, paged
    GET  /v1/videos    ?status=&page_token=                        -> catalog rows, paged
    GET  /v1/videos/{video_id}
    GET  /v1/clips/{video_id}/{clip_index}/thumbnail.jpg | segment.mp4   (service.media)
    POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches/{id}/results (service.batches;
                                                                   write scope to send one)
    GET  /v1/openapi.json, GET /metrics                            (a read key, like the above)
    GET  /healthz                                                  (no key: storage and model)

The same app runs in-process (tests) and as each Ray Serve replica's ingress
(service.serve). The stage's work is blocking (torch, Lance): it runs in worker threads
under the request timeout; the stage is set up once, under a lock.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response

from actors.query import QueryStage
from models.answer import ANSWERER_DIR
from schemas.config import ServiceConfig
from schemas.records import Question, StageError
from schemas.tables import VIDEOS
from service.auth import KeyStore, require
from service.batches import (
    BATCH_ID_PATTERN,
    BatchCreated,
    Batches,
    BatchRequest,
    BatchResults,
    BatchRunner,
    BatchStatus,
    stage_runner,
)
from service.bodies import (
    VIDEO_COLUMNS,
    Health,
    SearchRequest,
    SearchResponse,
    SqlRequest,
    SqlResponse,
    VideoList,
    VideoOut,
    VideoStatus,
    public_row,
    video_hits,
    video_out,
)
from service.errors import ApiError, install_error_handlers, log, public_message
from service.limits import BodyLimit, check_k, within_time
from service.media import ClipMedia
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.page import CONTENT_SECURITY_POLICY, PAGE_HTML
from service.paging import fingerprint, page_offset, page_token, sql_page
from service.paging import page_token as page_token_for
from storage.db import StorageError, open_table, sql_literal
from storage.sql import SqlError
from storage.uri import object_store_message

API_VERSION = "1.0.0"
HEALTH_TIMEOUT_S = 10.0
THUMBNAIL_CACHE = "private, max-age=86400"  # a clip's thumbnail changes only on re-ingest
SEGMENT_CACHE = "private, max-age=3600"
PARQUET = "application/vnd.apache.parquet"
VideoIdPath = Annotated[str, PathParam(max_length=64)]
ClipIndexPath = Annotated[int, PathParam(ge=0, le=10**9)]
BatchIdPath = Annotated[str, PathParam(pattern=BATCH_ID_PATTERN)]


class SearchService:
    """The blocking work behind the endpoints (called in worker threads)."""

    def __init__(self, stage: QueryStage, cfg: ServiceConfig, metrics: ServiceMetrics) -> None:
        self.stage, self.cfg, self.metrics = stage, cfg, metrics
        self.can_answer = (Path(stage.checkpoint) / ANSWERER_DIR / "config.json").is_file()
        self._setup_lock = threading.Lock()
        self._answer_lock = threading.Lock()  # the answerer loads on first use
        self.hide = [stage.storage_cfg.db, str(Path(stage.checkpoint).parent)]

    def ready(self) -> QueryStage:
        with self._setup_lock:
            self.stage.setup()
        return self.stage

    # ---- endpoints ---------------------------------------------------------------------
    def search(self, body: SearchRequest, offset: int, bound_to: str) -> SearchResponse:
        stage = self.ready()
        started = time.perf_counter()
        question = Question(question=body.question, where=body.where, k=body.k)
        with self._storage_errors():
            (result,) = stage.select([question])
        self.metrics.selection.observe(time.perf_counter() - started)
        if result.error is not None:
            raise self._selection_error(result.error)
        hits = video_hits(result.clips)
        end = offset + self.cfg.search_page_videos
        answer = None
        if body.answer and offset == 0 and result.clips:  # once per question: on page one
            started = time.perf_counter()
            with self._answer_lock, self._storage_errors():
                stage.answer([result])
            self.metrics.answer.observe(time.perf_counter() - started)
            answer = result.answer
        return SearchResponse(
            answer=answer,
            videos=hits[offset:end],
            next_page_token=page_token(end, bound_to) if end < len(hits) else None,
        )

    def sql(self, body: SqlRequest, offset: int, bound_to: str) -> SqlResponse:
        """One page of the statement's rows (service.paging: each page reads its own)."""
        stage = self.ready()
        try:
            page = sql_page(body.query, offset, self.cfg.page_size)
            with self._storage_errors():
                table = stage.sql(page.statement)
        except SqlError as exc:
            raise ApiError(400, "invalid_sql", public_message(str(exc), self.hide)) from exc
        more = not page.last and table.num_rows > page.rows
        rows = [_jsonable_row(public_row(r)) for r in table.slice(0, page.rows).to_pylist()]
        return SqlResponse(
            columns=table.column_names,
            rows=rows,
            next_page_token=page_token(offset + page.rows, bound_to) if more else None,
        )

    def videos(self, status: str | None, offset: int, bound_to: str) -> VideoList:
        table = self._catalog()
        if table is None:
            return VideoList(videos=[])
        query = table.search()
        if status is not None:
            query = query.where(f"status = {sql_literal(status)}")
        columns = [c for c in VIDEO_COLUMNS if c in table.schema.names]
        with self._storage_errors():
            rows = query.select(columns).offset(offset).limit(self.cfg.page_size + 1).to_arrow()
        videos = [video_out(row) for row in rows.to_pylist()]
        more = len(videos) > self.cfg.page_size
        return VideoList(
            videos=videos[: self.cfg.page_size],
            next_page_token=page_token(offset + self.cfg.page_size, bound_to) if more else None,
        )

    def video(self, video_id: str) -> VideoOut:
        table = self._catalog()
        found = []
        if table is not None:
            columns = [c for c in VIDEO_COLUMNS if c in table.schema.names]
            query = table.search().where(f"video_id = {sql_literal(video_id)}")
            with self._storage_errors():
                found = query.select(columns).limit(1).to_arrow().to_pylist()
        if not found:
            raise ApiError(404, "video_not_found", f"no video with id {video_id[:40]!r}")
        return video_out(found[0])

    def health(self) -> Health:
        """200 when the model is loaded and the memories table can be read; else a 503."""
        try:
            stage = self.ready()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the replica is not ready
            log.exception("the query stage could not be set up")
            raise ApiError(503, "unhealthy", "the model could not be loaded") from exc
        try:
            stage.store.table.version  # noqa: B018 - reads the latest manifest
        except StorageError as exc:
            message = public_message(str(exc), self.hide)
            raise ApiError(503, "unhealthy", f"storage: {message}") from exc
        except (ValueError, OSError, RuntimeError) as exc:
            raise ApiError(503, "unhealthy", "storage: the database cannot be read") from exc
        return Health(status="ok", encoder=stage.encoder)

    # ---- helpers -----------------------------------------------------------------------
    def _catalog(self) -> Any | None:
        with self._storage_errors():
            return open_table(self.ready().store.db, VIDEOS)

    def _selection_error(self, error: StageError) -> ApiError:
        message = public_message(error.message, self.hide)
        if error.kind == "where":
            return ApiError(400, "invalid_where", f"where: {message}")
        if error.message.startswith("StorageError"):
            return ApiError(503, "storage_unavailable", message.removeprefix("StorageError: "))
        return ApiError(400, "search_failed", re.sub(r"^\w+Error: ", "", message))

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """A database that is missing, empty or unreachable: 503 with a message naming it
        (the server's paths left out); a model without an answerer: 400."""
        hide = self.hide
        try:
            yield
        except (ApiError, SqlError):
            raise
        except StorageError as exc:
            raise ApiError(503, "storage_unavailable", public_message(str(exc), hide)) from exc
        except (ValueError, OSError, RuntimeError) as exc:
            if isinstance(exc, ValueError) and "has no answerer" in str(exc):
                raise ApiError(400, "no_answerer", public_message(str(exc), hide)) from exc
            storage = self.stage.storage_cfg
            message = object_store_message(exc, storage.db, storage.storage_options)
            if message is None:
                raise
            raise ApiError(503, "storage_unavailable", public_message(message, hide)) from exc


def _jsonable_row(row: dict) -> dict:
    return {k: _jsonable(v) for k, v in row.items()}


def _jsonable(value: Any) -> Any:
    """Arrow's Python values as JSON: times as ISO text, NaN and infinities as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return _jsonable_row(value)
    return value


def create_app(
    stage: QueryStage, cfg: ServiceConfig, keys: KeyStore, batch_runner: BatchRunner | None = None
) -> FastAPI:
    """The app over one query stage (set up on first use if it is not yet). Batches run
    through ``batch_runner`` (on Serve: the answer flow on the query actor pool); without
    one, in this process on the same stage."""
    app = FastAPI(
        title="VMem memory search",
        version=API_VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind a key
    )
    metrics = ServiceMetrics()
    app.state.keys, app.state.metrics = keys, metrics
    service = SearchService(stage, cfg, metrics)
    install_error_handlers(app)
    read = [Depends(require("read"))]
    timeout = cfg.timeout_s

    @app.get("/healthz", response_model=Health, responses={503: {"description": "unhealthy"}})
    async def healthz():
        try:
            return await within_time(min(timeout, HEALTH_TIMEOUT_S), service.health)
        except ApiError as exc:  # say why, whatever went wrong
            if exc.status == 504:
                raise ApiError(503, "unhealthy", "storage did not answer in time") from exc
            raise

    @app.post("/v1/search", response_model=SearchResponse, dependencies=read)
    async def search(body: SearchRequest):
        """The clips selected for a question, per video; with ``answer`` the answer too."""
        check_k(body.k, cfg.max_k)
        if body.answer and not service.can_answer:
            raise ApiError(
                400, "no_answerer", "this model has no answerer (train one with `vmem train`)"
            )
        bound_to = fingerprint("search", body.question, body.where, body.k)
        offset = page_offset(body.page_token, bound_to)
        return await within_time(timeout, lambda: service.search(body, offset, bound_to))

    @app.post("/v1/sql", response_model=SqlResponse, dependencies=read)
    async def sql(body: SqlRequest):
        """One SELECT of the SQL subset (README), a page at a time: the statement's LIMIT
        bounds the whole result; without one every row is listed."""
        bound_to = fingerprint("sql", body.query)
        offset = page_offset(body.page_token, bound_to)
        return await within_time(timeout, lambda: service.sql(body, offset, bound_to))

    @app.get("/v1/videos", response_model=VideoList, dependencies=read)
    async def videos(
        status: Annotated[VideoStatus | None, Query()] = None,
        page_token: Annotated[str | None, Query(max_length=200)] = None,
    ):
        """The catalog, a page at a time, optionally of one status."""
        bound_to = fingerprint("videos", status)
        offset = page_offset(page_token, bound_to)
        return await within_time(timeout, lambda: service.videos(status, offset, bound_to))

    @app.get("/v1/videos/{video_id}", response_model=VideoOut, dependencies=read)
    async def video(video_id: Annotated[str, PathParam(max_length=64)]):
        return await within_time(timeout, lambda: service.video(video_id))

    # ---- a clip's media (service.media) ------------------------------------------------
    media = ClipMedia(stage)

    def media_call(work):
        def run():
            service.ready()
            with service._storage_errors():
                return work()

        return within_time(timeout, run)

    @app.get(
        "/v1/clips/{video_id}/{clip_index}/thumbnail.jpg",
        dependencies=read,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no thumbnail"}},
    )
    async def thumbnail(video_id: VideoIdPath, clip_index: ClipIndexPath):
        """The clip's thumbnail, a small JPEG made at ingest."""
        jpeg = await media_call(lambda: media.thumbnail(video_id, clip_index))
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": THUMBNAIL_CACHE})

    @app.get(
        "/v1/clips/{video_id}/{clip_index}/segment.mp4",
        dependencies=read,
        response_class=Response,
        responses={200: {"content": {"video/mp4": {}}}, 410: {"description": "source gone"}},
    )
    async def segment(video_id: VideoIdPath, clip_index: ClipIndexPath):
        """The clip's time range cut from its source video (copied, not re-encoded)."""
        mp4 = await media_call(lambda: media.segment(video_id, clip_index))
        return Response(mp4, media_type="video/mp4", headers={"Cache-Control": SEGMENT_CACHE})

    # ---- batches (service.batches) -----------------------------------------------------
    runner = batch_runner or stage_runner(service.ready, service._answer_lock)
    batches = Batches(stage, cfg, runner)
    write = [Depends(require("write"))]

    @app.post("/v1/batches", response_model=BatchCreated, status_code=202, dependencies=write)
    async def create_batch(body: BatchRequest):
        """Start a batch: questions inline, or the uri of a JSONL/Parquet file of them."""
        if body.answer and not service.can_answer:
            raise ApiError(
                400, "no_answerer", "this model has no answerer (train one with `vmem train`)"
            )
        for question in body.questions or []:
            check_k(question.k, cfg.max_k)
        return await media_call(lambda: batches.submit(body))

    @app.get("/v1/batches/{batch_id}", response_model=BatchStatus, dependencies=read)
    async def batch_status(batch_id: BatchIdPath):
        """A batch's state (queued, running, done, failed), progress and counts."""
        return await media_call(lambda: batches.status(batch_id))

    @app.get(
        "/v1/batches/{batch_id}/results",
        response_model=BatchResults,
        dependencies=read,
        responses={200: {"content": {PARQUET: {}}}},
    )
    async def batch_results(
        batch_id: BatchIdPath,
        format: Annotated[Literal["json", "parquet"], Query()] = "json",
        page_token: Annotated[str | None, Query(max_length=200)] = None,
    ):
        """The rows of a finished batch (``vmem answer``'s columns): JSON a page at a
        time, or the whole Parquet file with ``format=parquet``."""
        if format == "parquet":
            data = await media_call(lambda: batches.results_bytes(batch_id))
            return Response(data, media_type=PARQUET)
        bound_to = fingerprint("batch", batch_id)
        offset = page_offset(page_token, bound_to)
        page = await media_call(lambda: batches.results_page(batch_id, offset, cfg.page_size))
        rows = [_jsonable_row(public_row(r)) for r in page.slice(0, cfg.page_size).to_pylist()]
        more = page.num_rows > cfg.page_size
        return BatchResults(
            columns=page.column_names,
            rows=rows,
            next_page_token=page_token_for(offset + cfg.page_size, bound_to) if more else None,
        )

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def page():
        """The results page: no data in it, so no key (it asks for one; service.page)."""
        return HTMLResponse(PAGE_HTML, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/v1/openapi.json", include_in_schema=False, dependencies=read)
    async def openapi():
        return JSONResponse(app.openapi())

    @app.get("/metrics", include_in_schema=False, dependencies=read)
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(
        BodyLimit,
        limit=cfg.body_limit_bytes,
        on_refused=lambda: metrics.count_error("body_too_large"),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    return app
