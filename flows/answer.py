"""The answer flow: a bulk batch of questions -> selected memories as a Parquet file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task
from pydantic import ValidationError

from actors.query import make_query_pool
from actors.runtime import BoundModel, bind_model, ensure_ray
from schemas.config import VMemConfig
from schemas.records import AnswerReport, QueryResult, Question, StageError
from storage.archive import ArchiveError, read_file

RESULT_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("question", pa.string()),
        ("rank", pa.int32()),
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("clip_index", pa.int32()),
        ("t_start", pa.float32()),
        ("t_end", pa.float32()),
        ("score", pa.float32()),
        ("answer", pa.string()),
        ("error", pa.string()),
    ]
)
QUESTIONS_PER_CALL = 256  # per query-actor call: the stage batches them end to end


class QuestionFileError(ValueError):
    """The question file as a whole cannot be read."""


def read_questions(
    path: str, storage_options: dict[str, str] | None = None
) -> list[Question | QueryResult]:
    """Parse a JSONL batch (a local path or an s3:// object): each line a Question, or a
    failed result naming the bad line."""
    try:
        lines = read_file(path, storage_options).decode("utf-8").splitlines()
    except ArchiveError as exc:
        raise QuestionFileError(f"question file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise QuestionFileError(f"question file {path} is not UTF-8 JSONL text: {exc}") from exc
    items: list[Question | QueryResult] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            question = Question.model_validate(json.loads(line))
            items.append(question.model_copy(update={"id": question.id or f"line-{number}"}))
        except (json.JSONDecodeError, ValidationError) as exc:
            message = f"{path}:{number}: {str(exc).splitlines()[0]}"
            items.append(
                QueryResult(line[:200], f"line-{number}", error=StageError("question", message))
            )
    if not items:
        raise QuestionFileError(f"question file {path} holds no questions")
    return items


@task(name="select-memories")
def select_all(questions: list[Question], bound: BoundModel, answers: bool) -> list[QueryResult]:
    """Run the questions through the query actor pool, in chunks."""
    if not questions:
        return []
    cfg = bound.config
    ensure_ray(cfg.ray)
    pool = make_query_pool(
        cfg.query.num_actors, bound.checkpoint, bound.encoder, cfg.storage, cfg.query
    )
    chunks = [
        questions[i : i + QUESTIONS_PER_CALL] for i in range(0, len(questions), QUESTIONS_PER_CALL)
    ]
    results: list[QueryResult] = []
    for batch in pool.map(
        lambda actor, chunk: actor.select.remote(chunk, with_answer=answers), chunks
    ):
        results.extend(batch)
    return results


def result_rows(results: list[QueryResult]) -> pa.Table:
    """One row per selected clip; one row with ``error`` set per failed question."""
    rows = []
    for result in results:
        base = {"question_id": result.question_id, "question": result.question}
        if result.error is not None or not result.clips:
            error = str(result.error) if result.error else "no memory matches the question"
            rows.append({**base, "error": error})
            continue
        for rank, clip in enumerate(result.clips):
            rows.append(
                {**base, "rank": rank, **clip.as_row(), "answer": result.answer, "error": None}
            )
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


@flow(name="vmem-answer", log_prints=True)
def answer_flow(
    questions_path: str,
    output: str,
    config: VMemConfig,
    answers: bool = False,
    bound: BoundModel | None = None,
) -> AnswerReport:
    """Read the batch -> select memories on the query pool -> write Parquet.

    ``bound``: the model already bound to ``config`` (by the CLI); None binds it here."""
    started = time.perf_counter()
    items = read_questions(questions_path, config.storage.storage_options)
    questions = [q for q in items if isinstance(q, Question)]
    if bound is None:
        bound = bind_model(config)
    selected = iter(select_all(questions, bound, answers))
    results = [next(selected) if isinstance(q, Question) else q for q in items]
    table = result_rows(results)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, output)
    failed = sum(1 for r in results if r.error is not None)
    return AnswerReport(
        questions=len(results),
        answered=len(results) - failed,
        failed=failed,
        rows=table.num_rows,
        output=output,
        wall_seconds=time.perf_counter() - started,
    )
