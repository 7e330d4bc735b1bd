"""The answer flow: a bulk batch of questions -> selected memories as a Parquet file.

Every row says its question's ``status``: "answered" (one row per selected clip),
"no_match" (the question ran and matched no memory: one row, no error) or "failed" (the
question could not run: one row naming the error). The report counts exactly those."""

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
        ("status", pa.string()),  # "answered" | "no_match" | "failed"
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


def result_status(result: QueryResult) -> str:
    """How a question ended: the ``status`` of its rows, and what the report counts."""
    if result.error is not None:
        return "failed"
    return "answered" if result.clips else "no_match"


def result_rows(results: list[QueryResult]) -> pa.Table:
    """One row per selected clip; one row per question that matched nothing or failed."""
    rows = []
    for result in results:
        status = result_status(result)
        base = {"question_id": result.question_id, "question": result.question, "status": status}
        if status != "answered":
            rows.append({**base, "error": str(result.error) if result.error else None})
            continue
        for rank, clip in enumerate(result.clips):
            rows.append(
                {**base, "rank": rank, **clip.as_row(), "answer": result.answer, "error": None}
            )
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def answer_report(results: list[QueryResult], table: pa.Table, output: str) -> AnswerReport:
    """The counts of the batch, by the same status its rows carry."""
    statuses = [result_status(r) for r in results]
    return AnswerReport(
        questions=len(results),
        answered=statuses.count("answered"),
        no_match=statuses.count("no_match"),
        failed=statuses.count("failed"),
        failed_ids=[
            str(r.question_id) for r, s in zip(results, statuses, strict=True) if s == "failed"
        ],
        rows=table.num_rows,
        output=output,
    )


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
    report = answer_report(results, table, output)
    report.wall_seconds = time.perf_counter() - started
    return report
