"""The Python API over an archive's database, for notebooks and programs (the CLI's ask,
sql and answer are built on it):

    from client import Archive

    archive = Archive.open(db="vmem-data")            # or "s3://bucket/db", storage_options=
    hit = archive.ask("when does a red circle move left?", k=2, answer=True)
    hit.answer, hit.videos[0].name, hit.videos[0].clips[0].t_start
    archive.sql("SELECT archive, COUNT(*) FROM videos GROUP BY archive").to_pandas()
    archive.answer(["a blue star?", "a yellow square?"])  # a pyarrow Table, one row per clip

Everything runs in this process on one query stage (the model loaded once, on first use);
``answer_batch`` runs a large batch as ``vmem answer`` does, on the Ray query actor pool
under the Prefect answer flow. Every failure is a ``client.errors.VMemError`` with a
one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from actors.query import QueryStage
from actors.runtime import BoundModel
from client.batch import question_items
from client.errors import (
    DatabaseError,
    ModelError,
    QueryError,
    StorageFailure,
    VMemError,
    storage_errors,
)
from client.results import AskResult
from models.answer import ANSWERER_DIR
from schemas.config import ConfigError, VMemConfig, load_config
from schemas.records import QueryResult, Question, StageError
from schemas.settings import VMemSettings
from storage.db import connect, open_table
from storage.sql import SqlError
from storage.uri import is_s3, object_store_message

if TYPE_CHECKING:
    from schemas.records import AnswerReport

STATUSES = ("done", "failed", "deleted")
QUESTIONS_PER_CALL = 256  # questions selected together: the stage batches them end to end


class Archive:
    """One archive's database with the model that wrote it, ready for questions."""

    def __init__(self, config: VMemConfig, bound: BoundModel) -> None:
        """Use ``Archive.open`` or ``Archive.from_config`` (they check the database)."""
        self.config, self.bound = config, bound
        self.stage = QueryStage(bound.checkpoint, bound.encoder, config.storage, config.query)

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        db: str | None = None,
        model: str | None = None,
        storage_options: dict[str, str] | None = None,
        config: VMemConfig | str | Path | None = None,
        as_of: str | None = None,
    ) -> Archive:
        """The database ``db`` (a folder or ``s3://bucket/prefix``; default ``$VMEM_DB`` or
        ./vmem-data) read with ``model`` (a checkpoint folder; default the trained default).
        ``config``: a VMemConfig or a config file (default ``$VMEM_CONFIG``) the other
        arguments override; ``as_of``: a version, tag or timestamp to read the tables as of."""
        overrides: dict[str, dict[str, Any]] = {
            "storage": {"db": db, "storage_options": storage_options},
            "model": {"path": model},
            "query": {"as_of": as_of},
        }
        try:
            if isinstance(config, VMemConfig):
                cfg = config.with_overrides(**overrides)
            else:
                cfg = load_config(config or VMemSettings().config, **overrides)
        except ConfigError as exc:
            raise VMemError(str(exc)) from exc
        except ValidationError as exc:
            raise VMemError(f"invalid settings: {exc.errors()[0].get('msg')}") from exc
        return cls.from_config(cfg)

    @classmethod
    def from_config(cls, cfg: VMemConfig) -> Archive:
        """Reach the database, bind the model (built or composed once into the model
        cache) and check the database holds memories; the weights load on first use."""
        from actors import runtime  # looked up when called: the CLI's tests replace it

        db = cfg.storage.db
        connection = None
        if is_s3(db):  # an endpoint that is down: one line before the model is bound
            with storage_errors(cfg.storage):
                connection = connect(cfg.storage)
        try:
            bound = runtime.bind_model(cfg)
        except (ValueError, FileNotFoundError) as exc:
            raise ModelError(str(exc)) from exc
        if not is_s3(db) and not Path(db).expanduser().is_dir():  # a read creates nothing
            raise DatabaseError(
                f"no database at {db}: give --db (or $VMEM_DB), or run `vmem ingest SOURCE` first"
            )
        with storage_errors(cfg.storage):
            memories = open_table(connection or connect(cfg.storage), "memories")
        if memories is None:
            raise DatabaseError(
                f"the database {db} holds no memories yet: run `vmem ingest SOURCE --db {db}`"
            )
        return cls(bound.config, bound)

    def __repr__(self) -> str:
        return f"Archive(db={self.config.storage.db!r}, encoder={self.bound.encoder!r})"

    # ---- questions ---------------------------------------------------------------------
    def ask(
        self, question: str, where: str | None = None, k: int | None = None, answer: bool = False
    ) -> AskResult:
        """The videos that fit ``question`` (best first), each with its ``k`` selected
        clips in time order; ``where``: a SQL predicate over memories columns applied
        first; ``answer``: also generate the answer (once, from the best video)."""
        if not question or not question.strip():
            raise QueryError('the question is empty: ask something, e.g. "where is the red car?"')
        if k is not None and k < 1:
            raise QueryError(f"k={k}: clips selected per video must be at least 1")
        if answer:
            self._check_answerer()
        stage = self._ready()
        with self._errors():
            (result,) = stage.select([Question(question=question, where=where, k=k)])
        if result.error is not None:
            raise self._selection_error(result.error)
        if answer and result.clips:
            with self._errors():
                stage.answer([result])
        return AskResult.from_selection(result)

    def answer(self, questions: list[str] | list[Question] | str | Path, generate: bool = False):
        """A batch in this process: ``questions`` as texts, Questions or a JSONL file (a
        path or s3:// URI; ``{"question", "id"?, "where"?, "k"?}`` per line). A pyarrow
        Table of ``vmem answer``'s columns, one row per selected clip (a question that
        matched nothing or could not run: one row saying so); ``.to_pandas()`` for pandas."""
        from flows.answer import result_rows  # the batch's columns, as `vmem answer` writes

        if generate:
            self._check_answerer()
        items = question_items(questions, self.config.storage.storage_options)
        todo = [q for q in items if isinstance(q, Question)]
        stage = self._ready()
        selected: list[QueryResult] = []
        with self._errors():
            for start in range(0, len(todo), QUESTIONS_PER_CALL):
                chunk = todo[start : start + QUESTIONS_PER_CALL]
                selected += stage.select(chunk, with_answer=generate)
        answers = iter(selected)
        return result_rows([next(answers) if isinstance(q, Question) else q for q in items])

    def answer_batch(self, questions: str, output: str, generate: bool = False) -> AnswerReport:
        """A large batch as ``vmem answer`` runs it: the Prefect answer flow on the Ray
        query actor pool (``query.num_actors``), results written to ``output`` (Parquet)."""
        from flows.answer import QuestionFileError, answer_flow

        if generate:
            self._check_answerer()
        try:
            with self._errors():
                return answer_flow(questions, output, self.config, generate, bound=self.bound)
        except QuestionFileError as exc:
            raise QueryError(str(exc)) from exc

    # ---- tables ------------------------------------------------------------------------
    def sql(self, query: str) -> pa.Table:
        """One SELECT of the SQL subset (README) over ``memories`` or ``videos``."""
        stage = self._ready()
        try:
            with self._errors():
                return stage.sql(query)
        except SqlError as exc:
            raise QueryError(f"SQL error: {exc}") from exc

    def videos(self, status: str | None = None) -> pa.Table:
        """The catalog: one row per video (only those in ``status``, if given)."""
        from storage.catalog import Catalog

        if status is not None and status not in STATUSES:
            raise QueryError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        store = self._ready().store
        assert store is not None  # opened by setup
        with self._errors():
            rows = Catalog(store).all()
        if status is not None:
            rows = rows.filter(pc.equal(rows["status"], status))
        return rows

    def thumbnail(self, video_id: str, clip_index: int) -> bytes:
        """The JPEG that ingest made of a clip (its middle sampled frame, 160 px)."""
        from storage.thumbnails import ThumbnailStore

        stage = self._ready()
        assert stage.store is not None
        with self._errors():
            jpeg = ThumbnailStore(stage.store.db).get(video_id, int(clip_index))
        if jpeg is None:
            raise QueryError(
                f"no thumbnail for clip {clip_index} of video {video_id} (unknown clip, or "
                "ingested before thumbnails were made: ingest it again)"
            )
        return jpeg

    # ---- helpers -----------------------------------------------------------------------
    def _ready(self) -> QueryStage:
        """The query stage with its model loaded and the store opened (once)."""
        with self._errors():
            self.stage.setup()
        return self.stage

    def _errors(self):
        return storage_errors(self.config.storage)

    def _check_answerer(self) -> None:
        checkpoint = self.bound.checkpoint
        if not (Path(checkpoint) / ANSWERER_DIR / "config.json").is_file():
            raise ModelError(f"the model {checkpoint} has no answerer: train one with `vmem train`")

    def _selection_error(self, error: StageError) -> VMemError:
        """A question's error as the right kind: a bad WHERE, or storage that failed."""
        storage = self.config.storage
        if error.kind == "search":
            name, _, text = error.message.partition(": ")
            plain = object_store_message(RuntimeError(text), storage.db, storage.storage_options)
            if name == "StorageError" or plain is not None:
                return StorageFailure(plain or text)
        return QueryError(str(error))
