"""The HTTP client against the search service's real app (in-process, over its ASGI
transport): the same answers as the Archive, every page followed, errors as VMemErrors."""

from __future__ import annotations

import pytest

from client import AuthError, HttpClient, QueryError, ServiceError
from tests.conftest import free_port

QUESTION = "a red circle moving left"


@pytest.fixture(scope="module")
def api(service):
    key = service.read["Authorization"].removeprefix("Bearer ")
    return HttpClient("http://testserver", key, http=service.client)


def test_ask_matches_the_archive_across_pages(api, archive):
    over_http = api.ask(QUESTION, k=2, answer=True)
    local = archive.ask(QUESTION, k=2, answer=True)
    assert len(local.videos) == 3  # the service pages two videos at a time: two pages
    assert [(v.video_id, [c.clip_index for c in v.clips]) for v in over_http.videos] == [
        (v.video_id, [c.clip_index for c in v.clips]) for v in local.videos
    ]
    assert over_http.answer == local.answer and over_http.answer
    first = over_http.videos[0]
    assert first.name == local.videos[0].name
    assert first.clips[0].thumbnail_url.endswith(f"/{first.clips[0].clip_index}/thumbnail.jpg")
    assert not first.uri.startswith("/srv")  # the service hides server paths


def test_sql_pages_and_aggregates_match_the_archive(api, archive):
    statement = "SELECT video_id, clip_index FROM memories ORDER BY video_id, clip_index LIMIT 100"
    assert api.sql(statement).to_pylist() == archive.sql(statement).to_pylist()  # 5 pages
    grouped = "SELECT video_id, COUNT(*) AS n FROM memories GROUP BY video_id ORDER BY n DESC"
    assert api.sql(grouped).to_pylist() == archive.sql(grouped).to_pylist()


def test_videos_and_a_batch(api, archive):
    assert sorted(api.videos()["video_id"].to_pylist()) == sorted(
        archive.videos()["video_id"].to_pylist()
    )
    assert api.videos(status="failed").num_rows == 1
    table = api.answer([QUESTION, "a blue star?"])
    assert set(table["question_id"].to_pylist()) == {"q1", "q2"}
    local = archive.answer([QUESTION, "a blue star?"])
    assert (
        table.select(["question_id", "video_id", "clip_index"]).to_pylist()
        == local.select(["question_id", "video_id", "clip_index"]).to_pylist()
    )


def test_errors_come_back_as_vmem_errors(api, service):
    with pytest.raises(QueryError, match="at most 1,000"):
        api.sql(
            "SELECT video_id FROM memories WHERE "
            + " OR ".join(f"clip_index = {i}" for i in range(5000))
        )
    with pytest.raises(QueryError, match="unknown column"):
        api.ask(QUESTION, where="speaker = 'x'")
    wrong = HttpClient("http://testserver", "not-a-key", http=service.client)
    with pytest.raises(AuthError) as info:
        wrong.sql("SELECT video_id FROM videos")
    assert info.value.status == 401
    with pytest.raises(ServiceError) as missing:
        api.thumbnail("0" * 16, 0)
    assert missing.value.status == 404
    nobody = HttpClient(f"http://127.0.0.1:{free_port()}", "k", timeout=2)
    with pytest.raises(ServiceError, match="cannot reach"):
        nobody.videos()
