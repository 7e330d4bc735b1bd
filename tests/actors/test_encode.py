"""The encode stage without Ray: memory carried per video, batching across videos exact."""

from __future__ import annotations

import numpy as np
import pytest

from actors.encode import EncodeStage
from checkpoints.registry import resolve_checkpoint
from schemas.records import Clip


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> EncodeStage:
    checkpoint = resolve_checkpoint(None, 0, tmp_path_factory.mktemp("models"))
    stage = EncodeStage(str(checkpoint), device="cpu")
    stage.setup()
    return stage


def _clips(video_id: str, n: int, seed: int) -> list[Clip]:
    rng = np.random.default_rng(seed)
    return [
        Clip(
            video_id,
            i,
            16.0 * i,
            16.0 * (i + 1),
            rng.integers(0, 255, (16, 64, 64, 3), np.uint8),
            16,
        )
        for i in range(n)
    ]


def test_batched_across_videos_equals_one_video_at_a_time(stage):
    a, b = _clips("a", 3, 1), _clips("b", 3, 2)
    alone = [stage.encode_step([clip]) for clip in a]
    stage.release(["a"])
    alone += [stage.encode_step([clip]) for clip in b]
    stage.release(["b"])
    together = [stage.encode_step([x, y]) for x, y in zip(a, b, strict=True)]
    stage.release(["a", "b"])
    alone_by_key = {(r.video_id, r.clip_index): r for step in alone for r in step}
    for step in together:
        for record in step:
            ref = alone_by_key[(record.video_id, record.clip_index)]
            np.testing.assert_allclose(record.memory, ref.memory, atol=1e-4)
            np.testing.assert_allclose(record.archive_key, ref.archive_key, atol=1e-4)


def test_memory_is_carried_from_clip_to_clip(stage):
    a, b = _clips("a", 2, 1), _clips("b", 2, 2)
    stage.encode_step([a[0]])
    stage.encode_step([b[0]])
    # clip 1 of "b" given the frames of clip 1 of "a": only the carried memory differs
    twin = Clip("b", 1, a[1].t_start, a[1].t_end, a[1].frames, 16)
    rec_a = stage.encode_step([a[1]])[0]
    rec_b = stage.encode_step([twin])[0]
    stage.release(["a", "b"])
    assert not np.allclose(rec_a.memory, rec_b.memory, atol=1e-4)
    assert rec_a.memory.shape == (stage.model.memory_tokens, stage.model.hidden_size)
    assert np.linalg.norm(rec_a.archive_key) == pytest.approx(1.0, abs=1e-4)


def test_out_of_order_clips_are_refused(stage):
    clips, twice = _clips("c", 3, 3), _clips("d", 1, 4)
    stage.encode_step([clips[0]])
    with pytest.raises(ValueError, match="expected 1"):
        stage.encode_step([clips[2]])
    with pytest.raises(ValueError, match="one clip per video"):
        stage.encode_step([twice[0], twice[0]])
    stage.release(["c", "d"])


def test_a_failed_step_fails_only_its_videos(stage):
    a, b, c = _clips("a", 3, 1), _clips("b", 3, 2), _clips("c", 1, 3)
    stage.encode_step([a[0], b[0]])
    with pytest.raises(ValueError, match="expected 1"):
        stage.encode_step([a[2], b[1]])  # a's clip out of order: the step fails a and b
    # the step queued behind it (as the driver sends them) still encodes the other video
    records = stage.encode_step([a[1], b[2], c[0]])
    assert [(r.video_id, r.clip_index) for r in records] == [("c", 0)]
    stage.release(["a", "b", "c"])
    again = stage.encode_step([a[0]])  # released: "a" can be ingested afresh
    assert [(r.video_id, r.clip_index) for r in again] == [("a", 0)]
    stage.release(["a"])


def test_propagation_off_resets_memory_at_every_clip(stage):
    clips = _clips("p", 2, 4)
    alone = EncodeStage(stage.checkpoint, device="cpu", propagate_memory=False)
    alone.setup()
    first = alone.encode_step([clips[0]])[0]
    second = alone.encode_step([clips[1]])[0]
    fresh = alone.encode_step([Clip("q", 0, 0.0, 16.0, clips[1].frames, 16)])[0]
    np.testing.assert_allclose(second.memory, fresh.memory, atol=1e-5)
    assert not np.allclose(first.memory, second.memory)
