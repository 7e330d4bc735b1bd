"""The Python API over a real (tiny) database: ask, answer, sql, videos, and its errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from actors.query import QueryStage
from client import Archive, DatabaseError, ModelError, QueryError, StorageFailure, VMemError
from schemas.records import Question
from tests.conftest import free_port
from tests.service.conftest import CLIPS, FAILED

QUESTION = "a red circle moving left"


def test_ask_gives_the_stage_selection_grouped_by_video(archive, tiny_db):
    found = archive.ask(QUESTION, k=2)
    stage = QueryStage(tiny_db.checkpoint, tiny_db.encoder, tiny_db.cfg.storage, tiny_db.cfg.query)
    (plain,) = stage.select([Question(question=QUESTION, k=2)])
    assert [(v.video_id, c.clip_index) for v in found.videos for c in v.clips] == [
        (c.video_id, c.clip_index) for c in plain.clips
    ]
    assert found.answer is None and found.question == QUESTION
    assert tiny_db.video_ids[FAILED] not in {v.video_id for v in found.videos}
    scores = [v.score for v in found.videos]
    assert scores == sorted(scores, reverse=True)  # best video first
    for video in found.videos:
        assert 1 <= len(video.clips) <= 2 and video.uri in CLIPS
        assert video.score == max(c.score for c in video.clips)
        starts = [c.t_start for c in video.clips]
        assert starts == sorted(starts)  # time order within a video
    table = found.to_arrow()
    assert table.num_rows == sum(len(v.clips) for v in found.videos)
    assert found.to_pandas()["video_id"].tolist() == table["video_id"].to_pylist()


def test_ask_with_answer_gives_it_once(archive):
    found = archive.ask(QUESTION, answer=True)
    assert isinstance(found.answer, str) and found.answer
    assert {row["answer"] for row in found.rows()} == {found.answer}


def test_sql_aggregates_and_the_catalog(archive, tiny_db):
    per_video = archive.sql(
        "SELECT video_id, COUNT(*) AS clips FROM memories GROUP BY video_id ORDER BY clips DESC"
    )
    expected = sorted(((tiny_db.video_ids[u], n) for u, n in CLIPS.items()), key=lambda r: -r[1])
    got = zip(per_video["video_id"].to_pylist(), per_video["clips"].to_pylist(), strict=True)
    assert list(got) == expected
    states = archive.sql("SELECT status, COUNT(*) FROM videos GROUP BY status").to_pylist()
    assert states == [{"status": "done", "count(*)": 3}, {"status": "failed", "count(*)": 1}]
    failed = archive.videos(status="failed")
    assert failed["uri"].to_pylist() == [FAILED] and archive.videos().num_rows == 4


def test_answer_in_process_gives_the_batch_table(archive):
    table = archive.answer([QUESTION, "a blue star?", ""], generate=True)
    assert isinstance(table, pa.Table)
    by_question = {}
    for row in table.to_pylist():
        by_question.setdefault(row["question_id"], []).append(row)
    assert set(by_question) == {"q1", "q2", "q3"}
    assert {r["status"] for r in by_question["q1"]} == {"answered"}
    assert len({r["answer"] for r in by_question["q1"]}) == 1 and by_question["q1"][0]["answer"]
    (bad,) = by_question["q3"]
    assert bad["status"] == "failed" and "question 3" in bad["error"]
    assert table.to_pandas().shape[0] == table.num_rows


def test_answer_reads_a_question_file(archive, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a red circle?", "id": "a", "k": 1}\nnot json\n')
    rows = archive.answer(path).to_pylist()
    assert {r["question_id"] for r in rows} == {"a", "line-2"}
    assert all(r["clip_index"] is not None for r in rows if r["question_id"] == "a")
    assert next(r for r in rows if r["question_id"] == "line-2")["status"] == "failed"


@pytest.mark.parametrize(
    ("call", "kind", "words"),
    [
        (lambda a: a.sql("SELECT nope FROM memories"), QueryError, "SQL error: unknown column"),
        (lambda a: a.ask(QUESTION, where="speaker = 'x'"), QueryError, "unknown column"),
        (lambda a: a.ask("  "), QueryError, "question is empty"),
        (lambda a: a.ask(QUESTION, k=0), QueryError, "at least 1"),
        (lambda a: a.videos(status="gone"), QueryError, "unknown status 'gone'"),
        (
            lambda a: a.sql(
                "SELECT video_id FROM memories WHERE "
                + " OR ".join(f"clip_index = {i}" for i in range(5000))
            ),
            QueryError,
            "at most 1,000",
        ),
    ],
)
def test_bad_input_is_a_one_line_vmem_error(archive, call, kind, words):
    with pytest.raises(kind) as info:
        call(archive)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_a_missing_thumbnail_is_a_one_line_error(archive, tiny_db):
    """The tiny database's clips were written without thumbnails (made by the writer
    directly); ingest makes them (tests/service/test_media.py reads real ones)."""
    with pytest.raises(QueryError, match="no thumbnail for clip 0") as info:
        archive.thumbnail(tiny_db.video_ids[next(iter(CLIPS))], 0)
    assert "\n" not in str(info.value)


def test_thumbnails_of_ingested_clips_are_jpegs(media_db):
    from client.archive import Archive

    kept = next(v for v in media_db.videos if v != media_db.gone)
    jpeg = Archive.open(config=media_db.service.db.cfg).thumbnail(kept, 0)
    assert jpeg[:3] == b"\xff\xd8\xff"  # a JPEG's start-of-image marker


def test_opening_errors_name_the_problem(tiny_db, tmp_path):
    cfg = tiny_db.cfg
    with pytest.raises(DatabaseError, match="no database at"):
        Archive.open(db=str(tmp_path / "missing"), config=cfg)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatabaseError, match="holds no memories yet"):
        Archive.open(db=str(tmp_path / "empty"), config=cfg)
    with pytest.raises(ModelError, match="no checkpoint"):
        Archive.open(model=str(tmp_path / "no-model"), config=cfg)
    with pytest.raises(DatabaseError, match="--as-of 'never' is not"):
        Archive.open(config=cfg, as_of="never").sql("SELECT video_id FROM videos")


def test_an_unreachable_endpoint_is_a_storage_failure(tiny_db):
    endpoint = f"http://127.0.0.1:{free_port()}"
    options = {"aws_endpoint": endpoint, "allow_http": "true", "aws_region": "us-east-1",
               "aws_access_key_id": "AKIDEXAMPLE1", "aws_secret_access_key": "s3cr3t-value",
               "client_max_retries": "0", "connect_timeout": "1s"}  # fmt: skip
    with pytest.raises(StorageFailure) as info:
        Archive.open(db="s3://nowhere/db", storage_options=options, config=tiny_db.cfg)
    message = str(info.value)
    assert message.startswith(f"cannot reach s3 endpoint {endpoint}") and "\n" not in message
    assert "s3cr3t-value" not in message and info.value.exit_code == 4
    assert isinstance(info.value, VMemError)
