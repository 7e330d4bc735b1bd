"""A batch of questions for ``answer``: texts, Questions or a JSONL file, each a Question
or, when it cannot be read, a failed result naming it (the batch goes on). The rows are
those of ``vmem answer`` (``flows.answer.result_rows``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from client.errors import QueryError
from schemas.records import QueryResult, Question, StageError


def question_items(
    questions: Any, storage_options: dict[str, str] | None = None
) -> list[Question | QueryResult]:
    """``questions``: a list of texts or Questions, or a JSONL file (a path or s3:// URI)
    read as ``vmem answer`` reads it. Questions without an id get ``q<n>``."""
    from flows.answer import QuestionFileError, read_questions

    if isinstance(questions, str | Path):
        try:
            return read_questions(str(questions), storage_options)
        except QuestionFileError as exc:
            raise QueryError(str(exc)) from exc
    items: list[Question | QueryResult] = []
    for number, item in enumerate(questions, start=1):
        if isinstance(item, Question):
            items.append(item if item.id else item.model_copy(update={"id": f"q{number}"}))
            continue
        try:
            items.append(Question(question=item, id=f"q{number}"))
        except ValidationError as exc:
            error = StageError("question", f"question {number}: {exc.errors()[0].get('msg')}")
            items.append(QueryResult(str(item)[:200], f"q{number}", error=error))
    if not items:
        raise QueryError("no questions given")
    return items
