"""The query stage without Ray: a small LanceDB folder written through the MemoryWriter
with memories of the tiny untrained model, then questions selected over it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.encode import EncodeStage
from actors.query import QueryStage
from actors.video_stage import CLIP_COLUMNS
from actors.writer import MemoryWriter
from checkpoints.registry import resolve_checkpoint
from models.select import archive_key_width, condition_parts, select_clips
from schemas.config import QueryConfig, StorageConfig
from schemas.records import Clip, Question, VideoOutcome, VideoTask
from storage.memories import MemoryStore, encoder_scope, memory_array

ENCODER, OTHER = "tiny-test@0", "another-model@1"
CLIPS = {"/archive/a.mp4": 6, "/archive/b.mp4": 3, "/archive/c.mp4": 2}  # c: fewer than K
K = 4
QUESTION = "When does a red circle move left?"


def _clips(video_id: str, n: int, frames: int, size: int, seed: int) -> list[Clip]:
    rng = np.random.default_rng(seed)
    shape = (frames, size, size, 3)
    return [
        Clip(video_id, i, 16.0 * i, 16.0 * (i + 1), rng.integers(0, 255, shape, np.uint8), frames)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[str, StorageConfig]:
    """(checkpoint, storage) of three encoded videos, and the same rows under another
    encoder that the stage must never see."""
    root = tmp_path_factory.mktemp("query")
    checkpoint = str(resolve_checkpoint(None, 0, root / "models", trained=False))
    encode = EncodeStage(checkpoint, device="cpu")
    encode.setup()
    model = encode.model
    storage = StorageConfig(db=str(root / "db"), commit_videos=1)
    dims = (archive_key_width(model.indicator_dim), model.memory_tokens, model.hidden_size)
    writer = MemoryWriter(storage, ENCODER, dims)
    everything, tasks = [], {}
    for seed, (uri, n) in enumerate(CLIPS.items()):
        task = VideoTask(uri=uri, size=1, etag="1")
        clips = _clips(task.video_id, n, model.clip_frames, model.image_size, seed)
        records = [r for clip in clips for r in encode.encode_step([clip])]
        encode.release([task.video_id])
        writer.add(VideoOutcome(task, "done", n_clips=n), records)
        everything += records
        tasks[task.video_id] = task
    writer.flush()
    MemoryStore(storage).write_memories(everything, OTHER, tasks)
    return checkpoint, storage


def _stage(archive, **query) -> QueryStage:
    checkpoint, storage = archive
    cfg = QueryConfig(**{"top_k": K, "max_videos": 3, **query})
    return QueryStage(checkpoint, ENCODER, storage, cfg)


def _by_video(clips) -> dict[str, list]:
    out: dict[str, list] = {}
    for clip in clips:
        out.setdefault(clip.uri, []).append(clip)
    return out


def test_k_clips_per_video_in_time_order_as_select_clips_picks(archive):
    stage = _stage(archive)
    (result,) = stage.select([Question(question=QUESTION)])
    assert result.error is None
    videos = _by_video(result.clips)
    assert set(videos) == set(CLIPS)
    _, parts = stage._embed_questions([QUESTION])
    for uri, clips in videos.items():
        indices = [c.clip_index for c in clips]
        assert len(indices) == min(K, CLIPS[uri]) and indices == sorted(indices)
        rows = stage.store.scan(
            encoder_scope(ENCODER, f"uri = '{uri}'"), ["clip_index", *CLIP_COLUMNS]
        )
        rows = rows.sort_by("clip_index")
        memories = torch.from_numpy(memory_array(rows))  # (N, M, D), as stored
        with torch.no_grad():
            queries = condition_parts(stage.model, torch.from_numpy(parts[:1]), memories[-1:])
            indicators = stage.model.streaming.indicators(memories)[None]  # (1, N, G*Q)
            index, fit = select_clips(queries, indicators, K)
        assert indices == [j for j in index[0].tolist() if j >= 0]
        np.testing.assert_allclose([c.score for c in clips], fit[0, : len(clips)], rtol=1e-6)


def test_max_videos_keeps_the_best_videos(archive):
    (every,) = _stage(archive).select([Question(question=QUESTION)])
    (one,) = _stage(archive, max_videos=1).select([Question(question=QUESTION)])
    best = max(_by_video(every.clips).items(), key=lambda item: max(c.score for c in item[1]))
    assert list(_by_video(one.clips)) == [best[0]]
    assert [c.clip_index for c in one.clips] == [c.clip_index for c in best[1]]


def test_a_bad_where_fails_only_its_own_question(archive):
    results = _stage(archive).select(
        [
            Question(question=QUESTION, where="no_such_column = 1"),
            Question(question=QUESTION, where="uri = '/archive/b.mp4'"),
            Question(question=QUESTION, where="clip_index >= 100"),  # nothing matches
        ]
    )
    assert results[0].error is not None and results[0].error.kind == "where"
    assert results[0].clips == []
    assert results[1].error is None and {c.uri for c in results[1].clips} == {"/archive/b.mp4"}
    assert results[2].error is None and results[2].clips == []


def test_each_question_s_k_is_honoured(archive):
    results = _stage(archive).select(
        [
            Question(question=QUESTION, k=1),
            Question(question=QUESTION, k=2),
            Question(question=QUESTION),
        ]
    )
    for result, k in zip(results, (1, 2, K), strict=True):
        assert result.error is None
        counts = {uri: len(clips) for uri, clips in _by_video(result.clips).items()}
        assert counts == {uri: min(k, n) for uri, n in CLIPS.items()}


def test_selection_and_sql_see_only_the_stage_s_encoder(archive):
    stage = _stage(archive)
    assert encoder_scope(ENCODER) == f"encoder = '{ENCODER}'"
    assert encoder_scope(ENCODER, "uri = 'x'") == f"(uri = 'x') AND encoder = '{ENCODER}'"
    assert encoder_scope("it's") == "encoder = 'it''s'"  # quoted as a SQL literal
    stage.setup()
    assert not stage.store.holds_only(ENCODER)  # the archive holds OTHER's rows too
    rows = stage.sql("SELECT encoder, video_id FROM memories LIMIT 50").to_pylist()  # default 10
    assert len(rows) == sum(CLIPS.values()) and {r["encoder"] for r in rows} == {ENCODER}
    ranked = "ORDER BY relevance('a red circle') LIMIT 50"
    found = stage.sql(f"SELECT encoder, score FROM memories WHERE t_start >= 0 {ranked}")
    found = found.to_pylist()
    assert len(found) == sum(CLIPS.values()) and {r["encoder"] for r in found} == {ENCODER}
    (result,) = stage.select([Question(question=QUESTION)], with_memory=True)
    assert all(c.memory is not None for c in result.clips)
