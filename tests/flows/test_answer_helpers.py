from __future__ import annotations

import pytest

from flows.answer import QuestionFileError, answer_report, read_questions, result_rows
from schemas.records import QueryResult, Question, SelectedClip, StageError


def test_read_questions_keeps_good_lines_and_names_bad_ones(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a?"}\n\nnot json\n{"question": "b?", "id": "x", "k": 0}\n')
    items = read_questions(str(path))
    assert isinstance(items[0], Question) and items[0].id == "line-1"
    assert isinstance(items[1], QueryResult) and f"{path}:3:" in items[1].error.message
    assert isinstance(items[2], QueryResult) and f"{path}:4:" in items[2].error.message


def test_unreadable_question_files_raise_clear_errors(tmp_path):
    with pytest.raises(QuestionFileError, match="not found"):
        read_questions(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(QuestionFileError, match="no questions"):
        read_questions(str(empty))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(QuestionFileError, match="UTF-8"):
        read_questions(str(binary))


def test_result_rows_flatten_clips_and_errors():
    clip = SelectedClip("v", "/a.mp4", 3, 48.0, 64.0, 0.5)
    results = [
        QueryResult("q?", "1", clips=[clip, clip]),
        QueryResult("bad", "2", error=StageError("where", "unknown column nope")),
    ]
    rows = result_rows(results).to_pylist()
    assert [r["rank"] for r in rows[:2]] == [0, 1] and rows[0]["t_start"] == 48.0
    assert rows[2]["error"] == "where: unknown column nope" and rows[2]["video_id"] is None
    assert [r["status"] for r in rows] == ["answered", "answered", "failed"]


def test_the_counts_are_those_of_the_rows_a_question_matching_nothing_is_not_failed():
    clip = SelectedClip("v", "/a.mp4", 0, 0.0, 16.0, 0.9)
    results = [
        QueryResult("a?", "q1", clips=[clip]),
        QueryResult("nothing there?", "q2"),  # ran, matched no memory
        QueryResult("broken", "q3", error=StageError("where", "unknown column nope")),
        QueryResult("b?", "q4", clips=[clip, clip]),
    ]
    table = result_rows(results)
    report = answer_report(results, table, "out.parquet")
    rows = table.to_pylist()
    per_question = {r["question_id"]: r["status"] for r in rows}
    assert per_question == {"q1": "answered", "q2": "no_match", "q3": "failed", "q4": "answered"}
    assert [r["question_id"] for r in rows if r["error"]] == ["q3"] == report.failed_ids
    counts = {
        s: sum(1 for v in per_question.values() if v == s) for s in set(per_question.values())
    }
    assert (
        (report.answered, report.no_match, report.failed)
        == (
            counts["answered"],
            counts["no_match"],
            counts["failed"],
        )
        == (2, 1, 1)
    )
    assert report.questions == 4 and report.rows == len(rows) == 5


def test_question_files_are_read_from_s3_too(s3_server, s3_bucket):
    from storage.uri import s3_client

    bucket = s3_bucket("questions")
    client = s3_client(s3_server)
    body = '{"question": "a?", "id": "q1"}\n{"question": "b?", "where": "t_start > 5"}\n'
    client.put_object(Bucket=bucket, Key="batch/q.jsonl", Body=body.encode())
    items = read_questions(f"s3://{bucket}/batch/q.jsonl", s3_server)
    assert [(q.id, q.question, q.where) for q in items] == [
        ("q1", "a?", None),
        ("line-2", "b?", "t_start > 5"),
    ]
    with pytest.raises(QuestionFileError, match=f"object not found: s3://{bucket}/nope.jsonl"):
        read_questions(f"s3://{bucket}/nope.jsonl", s3_server)
