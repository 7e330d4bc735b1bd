"""The ingest scheduler without Ray: the sequential runner drives fake and real stages."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from actors.decode import DecodeStage
from actors.encode import CarriedMemoryLost, EncodeStage
from actors.local_runner import LocalStageRunner, LocalStep, StageLost
from actors.scheduler import IngestScheduler
from checkpoints.registry import resolve_checkpoint
from models.config import VMemModelConfig
from schemas.config import DecodeConfig, EncodeConfig, VMemConfig
from schemas.records import (
    Clip,
    DecodedChunk,
    MemoryRecord,
    StageError,
    VideoOutcome,
    VideoProbe,
    VideoTask,
)
from world.samples import write_synthetic_video

PROBE = VideoProbe(duration_s=1.0, fps=30.0, width=8, height=8, codec="h264")


def task(name: str) -> VideoTask:
    """A task whose video_id is its name, so steps and records read as names."""
    return VideoTask(uri=f"/archive/{name}.mp4", size=1, etag="e", video_id=name)


def clip(video_id: str, index: int) -> Clip:
    return Clip(video_id, index, float(index), index + 1.0, np.zeros((1, 1, 1, 3), np.uint8), 1)


@dataclass
class FakeDecoder:
    """Streams ``clips[name]`` clips in chunks of ``chunk_clips``.

    A name in ``broken`` gives one error chunk (an unreadable file); one in ``crashing``
    raises after its first chunk (a dead decode actor). ``on_produce(video, k)`` runs just
    before chunk k is produced."""

    clips: dict[str, int]
    chunk_clips: int = 2
    broken: set[str] = field(default_factory=set)
    crashing: set[str] = field(default_factory=set)
    on_produce: object = None
    produced: Counter = field(default_factory=Counter)  # chunks produced per video
    stopped: list[str] = field(default_factory=list)  # streams closed before their end

    def stream(self, task: VideoTask) -> Iterator[DecodedChunk]:
        name = task.video_id
        if name in self.broken:
            error = StageError("open", f"{task.uri}: not a video")
            yield DecodedChunk(name, last=True, error=error)
            return
        indices = list(range(self.clips[name]))
        chunks = [
            indices[i : i + self.chunk_clips] for i in range(0, len(indices), self.chunk_clips)
        ]
        try:
            for k, chunk in enumerate(chunks):
                if name in self.crashing and k == 1:
                    raise RuntimeError("decoder crashed")
                if self.on_produce:
                    self.on_produce(name, k)
                self.produced[name] += 1
                clips = [clip(name, i) for i in chunk]
                yield DecodedChunk(name, clips, PROBE if k == 0 else None, k == len(chunks) - 1)
        except GeneratorExit:
            self.stopped.append(name)
            raise


@dataclass
class FakeEncoder:
    """Records every step as [(video, clip index)]; a step holding one of ``fail_on`` raises."""

    fail_on: set[tuple[str, int]] = field(default_factory=set)
    steps: list[list[tuple[str, int]]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def encode_step(self, clips: list[Clip]) -> list[MemoryRecord]:
        step = [(c.video_id, c.clip_index) for c in clips]
        self.steps.append(step)
        if self.fail_on & set(step):
            raise RuntimeError(f"boom in {step}")
        return [
            MemoryRecord(c.video_id, c.clip_index, c.t_start, c.t_end, np.ones(2), np.ones((1, 2)))
            for c in clips
        ]

    def release(self, video_ids: list[str]) -> None:
        self.released.extend(video_ids)


@dataclass
class Reported:
    """What the scheduler called back with."""

    videos: list[tuple[VideoOutcome, list[MemoryRecord]]] = field(default_factory=list)
    clip_counts: list[int] = field(default_factory=list)

    @property
    def outcomes(self) -> dict[str, VideoOutcome]:
        return {outcome.task.video_id: outcome for outcome, _ in self.videos}

    @property
    def records(self) -> dict[str, list[tuple[str, int]]]:
        return {o.task.video_id: [(r.video_id, r.clip_index) for r in rs] for o, rs in self.videos}


def ingest(runner: LocalStageRunner, names: list[str], batch_videos: int) -> Reported:
    reported = Reported()
    scheduler = IngestScheduler(
        runner,
        batch_videos,
        on_video=lambda outcome, records: reported.videos.append((outcome, records)),
        on_clips=reported.clip_counts.append,
    )
    scheduler.run([task(name) for name in names])
    return reported


def in_order(name: str, n: int) -> list[tuple[str, int]]:
    return [(name, i) for i in range(n)]


def test_one_encode_step_carries_one_clip_of_each_video():
    decoder, encoder = FakeDecoder({"a": 3, "b": 3, "c": 3}), FakeEncoder()
    reported = ingest(LocalStageRunner([decoder], [encoder]), ["a", "b", "c"], batch_videos=3)
    assert encoder.steps == [[("a", i), ("b", i), ("c", i)] for i in range(3)]
    assert {n: o.status for n, o in reported.outcomes.items()} == dict.fromkeys("abc", "done")
    assert sorted(encoder.released) == ["a", "b", "c"]


def test_a_finished_video_slot_goes_to_the_next_video_at_once():
    decoder, encoder = FakeDecoder({"a": 1, "b": 4, "c": 2}), FakeEncoder()
    reported = ingest(LocalStageRunner([decoder], [encoder]), ["a", "b", "c"], batch_videos=2)
    # "c" waits for a slot, then joins the very step after "a"'s last one
    assert encoder.steps == [
        [("a", 0), ("b", 0)],
        [("b", 1), ("c", 0)],
        [("b", 2), ("c", 1)],
        [("b", 3)],
    ]
    assert [o.task.video_id for o, _ in reported.videos] == ["a", "c", "b"]
    assert [o.n_clips for o, _ in reported.videos] == [1, 2, 4]


class SpyRunner(LocalStageRunner):
    """Counts, per video, the chunks and clips the driver took and the clips it sent."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.chunks_taken: Counter = Counter()
        self.clips_held: Counter = Counter()  # taken from the stream, not yet sent
        self.most_held = 0

    def next_chunk(self, stream):
        chunk = super().next_chunk(stream)
        if chunk is not None:
            self.chunks_taken[chunk.video_id] += 1
            self.clips_held[chunk.video_id] += len(chunk.clips)
            self.most_held = max(self.most_held, self.clips_held[chunk.video_id])
        return chunk

    def submit_encode(self, encoder, clips):
        for c in clips:
            self.clips_held[c.video_id] -= 1
        return super().submit_encode(encoder, clips)


@pytest.mark.parametrize("chunks_ahead", [1, 2, 3])
def test_decoders_run_at_most_n_chunks_ahead_and_the_driver_holds_one_chunk(chunks_ahead):
    decoder, encoder = FakeDecoder({"a": 12, "b": 9}, chunk_clips=2), FakeEncoder()
    runner = SpyRunner([decoder], [encoder], chunks_ahead=chunks_ahead)
    ahead: list[int] = []  # at each chunk produced: chunks produced - chunks the driver took
    decoder.on_produce = lambda video, k: ahead.append(k + 1 - runner.chunks_taken[video])
    reported = ingest(runner, ["a", "b"], batch_videos=2)
    assert max(ahead) == chunks_ahead  # it does run ahead, and never further
    assert runner.most_held == decoder.chunk_clips
    assert reported.records == {"a": in_order("a", 12), "b": in_order("b", 9)}


def test_a_bad_file_or_a_dead_decoder_fails_its_video_and_the_others_go_on():
    decoder = FakeDecoder({"b": 4, "c": 3, "d": 5}, broken={"a"}, crashing={"b"})
    encoder = FakeEncoder()
    reported = ingest(LocalStageRunner([decoder], [encoder]), ["a", "b", "c", "d"], 2)
    outcomes = reported.outcomes
    assert outcomes["a"].status == "failed"
    assert outcomes["a"].error == StageError("open", "/archive/a.mp4: not a video")
    assert outcomes["b"].status == "failed" and outcomes["b"].error.kind == "decode"
    assert "/archive/b.mp4" in outcomes["b"].error.message
    assert "RuntimeError: decoder crashed" in outcomes["b"].error.message
    assert outcomes["b"].probe == PROBE  # read from the chunk it gave before dying
    assert reported.records == {"a": [], "b": [], "c": in_order("c", 3), "d": in_order("d", 5)}
    assert (outcomes["c"].status, outcomes["d"].status) == ("done", "done")


def test_an_encode_step_that_raises_fails_exactly_its_videos():
    decoder = FakeDecoder(dict.fromkeys("abcd", 6))
    first, second = FakeEncoder(fail_on={("a", 1)}), FakeEncoder()
    runner = LocalStageRunner([decoder], [first, second])
    reported = ingest(runner, ["a", "b", "c", "d"], batch_videos=2)
    assert first.steps[:2] == [[("a", 0), ("c", 0)], [("a", 1), ("c", 1)]]
    assert len(first.steps) == 2  # nothing more of the failed videos is sent
    outcomes = reported.outcomes
    for name in "ac":  # the videos of the failed step
        assert outcomes[name].status == "failed" and outcomes[name].error.kind == "encode"
        assert "boom in [('a', 1), ('c', 1)]" in outcomes[name].error.message
        assert reported.records[name] == []
    assert reported.records == {"a": [], "b": in_order("b", 6), "c": [], "d": in_order("d", 6)}
    assert sorted(first.released) == ["a", "c"] and sorted(second.released) == ["b", "d"]
    assert sorted(decoder.stopped) == ["a", "c"]  # their decoders stopped before the end
    assert decoder.produced["a"] < 3


def test_the_same_video_listed_twice_is_ingested_once():
    decoder, encoder = FakeDecoder({"a": 2, "b": 3}), FakeEncoder()
    for batch_videos in (1, 4):
        reported = ingest(
            LocalStageRunner([decoder], [encoder]), ["a", "b", "a", "a"], batch_videos
        )
        assert [o.task.video_id for o, _ in reported.videos].count("a") == 1
        assert reported.records == {"a": in_order("a", 2), "b": in_order("b", 3)}


class LateStepsRunner(LocalStageRunner):
    """Reports finished steps two at a time, newest first (as ray.wait may hand them back)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release_all = False
        self.delivered: list[tuple[str, int]] = []

    def finished_steps(self, steps):
        if len(steps) < 2 and not self.release_all:
            return []
        self.release_all = False
        return steps[::-1]

    def step_records(self, step: LocalStep):
        records = super().step_records(step)
        self.delivered += [(r.video_id, r.clip_index) for r in records]
        return records

    def wait_for_any(self, streams, steps, timeout_s):
        self.release_all = True


def test_records_reach_on_video_in_clip_order():
    runner = LateStepsRunner([FakeDecoder({"a": 7, "b": 4})], [FakeEncoder()])
    reported = ingest(runner, ["a", "b"], batch_videos=2)
    assert runner.delivered.index(("a", 1)) < runner.delivered.index(("a", 0))  # out of order
    assert reported.records == {"a": in_order("a", 7), "b": in_order("b", 4)}


def test_on_clips_counts_the_records_of_every_step():
    encoder = FakeEncoder(fail_on={("b", 2)})
    runner = LocalStageRunner([FakeDecoder({"a": 5, "b": 4, "c": 2})], [encoder])
    reported = ingest(runner, ["a", "b", "c"], batch_videos=2)
    # steps: [a0 b0] [a1 b1] [a2 b2] (raises: a and b fail) [c0] [c1]
    assert len(encoder.steps) == 5 and encoder.steps[3:] == [[("c", 0)], [("c", 1)]]
    assert reported.clip_counts == [2, 2, 0, 1, 1]


# --- lost actors: Ray restarts them; the scheduler starts their videos again from clip 0


@dataclass
class RestartingEncoder(FakeEncoder):
    """Keeps each video's next clip as the real stage does; at a clip in ``die_at`` it dies
    once (raises StageLost) and comes back empty, as a restarted actor would."""

    die_at: set[tuple[str, int]] = field(default_factory=set)
    next_clip: dict[str, int] = field(default_factory=dict)

    def encode_step(self, clips: list[Clip]) -> list[MemoryRecord]:
        step = {(c.video_id, c.clip_index) for c in clips}
        if self.die_at & step:
            self.die_at -= step
            self.steps.append(sorted(step))
            self.next_clip.clear()
            raise StageLost("encode actor died")
        for c in clips:
            if c.clip_index > 0 and c.video_id not in self.next_clip:
                raise CarriedMemoryLost(f"no memory of {c.video_id}")
            self.next_clip[c.video_id] = c.clip_index + 1
        return super().encode_step(clips)

    def release(self, video_ids: list[str]) -> None:
        super().release(video_ids)
        for video_id in video_ids:
            self.next_clip.pop(video_id, None)


@dataclass
class DyingDecoder(FakeDecoder):
    """A decoder whose actor dies at chunk 1 of a video in ``dies``, that many times."""

    dies: Counter = field(default_factory=Counter)

    def stream(self, task: VideoTask) -> Iterator[DecodedChunk]:
        for k, chunk in enumerate(super().stream(task)):
            if k == 1 and self.dies[task.video_id] > 0:
                self.dies[task.video_id] -= 1
                raise StageLost("decode actor died")
            yield chunk


def test_a_lost_encoder_restarts_all_its_videos_from_clip_0_and_each_is_reported_once():
    decoder = FakeDecoder({"a": 5, "b": 5, "c": 4, "d": 2})
    lost, other = RestartingEncoder(die_at={("a", 2)}), RestartingEncoder()
    reported = ingest(LocalStageRunner([decoder], [lost, other]), ["a", "b", "c", "d"], 2)
    # a and c share the first encoder: both start again, though only a was in the dead step
    assert lost.steps[:3] == [[("a", 0), ("c", 0)], [("a", 1), ("c", 1)], [("a", 2), ("c", 2)]]
    assert lost.steps[3] == [("a", 0), ("c", 0)]
    assert [o.task.video_id for o, _ in reported.videos].count("a") == 1
    assert {n: o.status for n, o in reported.outcomes.items()} == dict.fromkeys("abcd", "done")
    assert reported.records == {n: in_order(n, k) for n, k in decoder.clips.items()}
    assert other.steps[0] == [("b", 0), ("d", 0)]  # the other encoder's videos went on
    assert decoder.stopped == ["a"]  # its first stream was cut short (c had sent its last)


def test_a_step_on_a_restarted_encoder_that_lacks_the_memory_restarts_the_videos():
    decoder = FakeDecoder({"a": 4, "b": 3})
    encoder = RestartingEncoder()
    runner = LocalStageRunner([decoder], [encoder])
    steps = []
    # after the first step, the encoder is "restarted" behind the scheduler's back
    reported = Reported()
    scheduler = IngestScheduler(
        runner,
        2,
        on_video=lambda o, r: reported.videos.append((o, r)),
        on_clips=lambda n: steps.append(n) or (len(steps) == 1 and encoder.next_clip.clear()),
    )
    scheduler.run([task("a"), task("b")])
    assert encoder.steps[:3] == [[("a", 0), ("b", 0)], [("a", 0), ("b", 0)], [("a", 1), ("b", 1)]]
    assert scheduler.attempts == Counter({"a": 2, "b": 2})
    assert reported.records == {"a": in_order("a", 4), "b": in_order("b", 3)}


def test_a_lost_decoder_restarts_its_video_and_the_encoder_forgets_the_first_try():
    decoder = DyingDecoder({"a": 6, "b": 4}, dies=Counter({"a": 1}))
    encoder = RestartingEncoder()
    reported = ingest(LocalStageRunner([decoder], [encoder]), ["a", "b"], batch_videos=2)
    sent_a = [i for step in encoder.steps for v, i in step if v == "a"]
    assert sent_a == [0, 1, 0, 1, 2, 3, 4, 5]  # one chunk, then again from clip 0
    assert encoder.released.count("a") == 2  # the abandoned try's memory was dropped
    assert reported.records == {"a": in_order("a", 6), "b": in_order("b", 4)}
    assert reported.clip_counts and sum(reported.clip_counts) == 6 + 4 + 2


def test_a_video_whose_actor_is_lost_on_every_try_fails_after_max_attempts():
    decoder = DyingDecoder({"a": 4, "b": 4}, dies=Counter({"a": 9}))
    encoder = RestartingEncoder()
    reported = Reported()
    scheduler = IngestScheduler(
        LocalStageRunner([decoder], [encoder]),
        2,
        on_video=lambda o, r: reported.videos.append((o, r)),
        max_attempts=2,
    )
    scheduler.run([task("a"), task("b")])
    failed = reported.outcomes["a"]
    assert failed.status == "failed" and failed.error.kind == "decode"
    assert "StageLost: decode actor died" in failed.error.message
    assert "actor lost on each of 2 tries" in failed.error.message
    assert decoder.dies["a"] == 7 and reported.records == {"a": [], "b": in_order("b", 4)}
    with pytest.raises(ValueError, match="at least 1"):
        IngestScheduler(LocalStageRunner([decoder], [encoder]), 2, print, max_attempts=0)


def test_a_video_that_fails_by_itself_is_not_tried_again():
    decoder = FakeDecoder({"b": 4, "c": 3}, broken={"a"}, crashing={"b"})
    encoder = FakeEncoder(fail_on={("c", 1)})
    reported = Reported()
    scheduler = IngestScheduler(
        LocalStageRunner([decoder], [encoder]), 3, lambda o, r: reported.videos.append((o, r))
    )
    scheduler.run([task("a"), task("b"), task("c")])
    assert scheduler.attempts == Counter({"a": 1, "b": 1, "c": 1})
    assert {n: o.status for n, o in reported.outcomes.items()} == dict.fromkeys("abc", "failed")


def test_chunks_ahead_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        LocalStageRunner([], [], chunks_ahead=0)


# --- the real stages: a tiny synthetic archive through DecodeStage and the untrained model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return str(resolve_checkpoint(None, 0, tmp_path_factory.mktemp("models"), trained=False))


def test_real_stages_batched_across_videos_match_one_video_at_a_time(checkpoint, tmp_path):
    model = VMemModelConfig.from_pretrained(checkpoint)
    size = model.vision().image_size
    decode = DecodeConfig(
        sample_fps=4.0,
        clip_frames=model.clip_frames,
        frame_size=size if isinstance(size, int) else int(size[0]),
        sampling="exact",
        chunk_clips=2,
    )
    cfg = VMemConfig(decode=decode, encode=EncodeConfig(batch_videos=2, num_decoders=2))
    seconds = {"a": 9.0, "b": 5.0, "c": 13.0}
    for i, (name, s) in enumerate(seconds.items()):
        write_synthetic_video(tmp_path / f"{name}.mp4", s, seed=i)
    (tmp_path / "bad.mp4").write_text("not a video\n" * 20)
    tasks = [VideoTask(str(tmp_path / f"{n}.mp4"), 0, "e") for n in ["a", "bad", "b", "c"]]

    runner = LocalStageRunner.from_config(cfg, checkpoint, device="cpu")
    reported: dict[str, tuple[VideoOutcome, list[MemoryRecord]]] = {}
    steps: list[int] = []
    runner.encoders[0].encode_step = _counting(runner.encoders[0].encode_step, steps)
    scheduler = IngestScheduler(runner, 2, lambda o, r: reported.__setitem__(o.task.uri, (o, r)))
    scheduler.run(tasks)

    bad, _ = reported[str(tmp_path / "bad.mp4")]
    assert bad.status == "failed" and str(tmp_path / "bad.mp4") in bad.error.message
    assert max(steps) == 2  # clips of two videos went through the model side by side
    alone = EncodeStage(checkpoint, device="cpu")
    for name, s in seconds.items():
        outcome, records = reported[str(tmp_path / f"{name}.mp4")]
        samples = math.ceil(s * decode.sample_fps)
        assert outcome.status == "done" and outcome.probe.duration_s == pytest.approx(s)
        assert outcome.n_clips == len(records) == math.ceil(samples / decode.clip_frames)
        assert [r.clip_index for r in records] == list(range(outcome.n_clips))
        task_alone = VideoTask(str(tmp_path / f"{name}.mp4"), 0, "e")
        chunks = DecodeStage(cfg.decode).stream(task_alone)
        reference = [r for chunk in chunks for c in chunk.clips for r in alone.encode_step([c])]
        alone.release([task_alone.video_id])
        for got, want in zip(records, reference, strict=True):
            assert (got.t_start, got.t_end) == (want.t_start, want.t_end)
            np.testing.assert_allclose(got.memory, want.memory, atol=1e-4)
            np.testing.assert_allclose(got.archive_key, want.archive_key, atol=1e-4)


def _counting(encode_step, sizes: list[int]):
    """``encode_step`` that also notes how many clips each step held."""

    def step(clips):
        sizes.append(len(clips))
        return encode_step(clips)

    return step


def test_real_encoder_restarted_mid_run_gives_the_same_memories(checkpoint, tmp_path):
    model = VMemModelConfig.from_pretrained(checkpoint)
    size = model.vision().image_size
    decode = DecodeConfig(
        sample_fps=4.0,
        clip_frames=model.clip_frames,
        frame_size=size if isinstance(size, int) else int(size[0]),
        sampling="exact",
        chunk_clips=1,
    )
    cfg = VMemConfig(decode=decode, encode=EncodeConfig(batch_videos=2, num_decoders=1))
    paths = [write_synthetic_video(tmp_path / f"{n}.mp4", 9.0, seed=i) for i, n in enumerate("ab")]
    tasks = [VideoTask(str(path), 0, "e") for path in paths]
    runner = LocalStageRunner.from_config(cfg, checkpoint, device="cpu")
    reported: dict[str, list[MemoryRecord]] = {}
    restarts: list[int] = []

    def restart_after_first_step(n_records: int) -> None:
        if not restarts:  # once, after clip 0 of both videos: a fresh actor, no memory
            restarts.append(n_records)
            runner.encoders[0] = EncodeStage(checkpoint, device="cpu")

    scheduler = IngestScheduler(
        runner, 2, lambda o, r: reported.__setitem__(o.task.uri, r), restart_after_first_step
    )
    scheduler.run(tasks)
    assert scheduler.attempts == Counter({t.video_id: 2 for t in tasks})
    reference = LocalStageRunner.from_config(cfg, checkpoint, device="cpu")
    expected: dict[str, list[MemoryRecord]] = {}
    IngestScheduler(reference, 2, lambda o, r: expected.__setitem__(o.task.uri, r)).run(tasks)
    for uri, records in expected.items():
        assert [r.clip_index for r in reported[uri]] == list(range(len(records))) != []
        for got, want in zip(reported[uri], records, strict=True):
            np.testing.assert_allclose(got.memory, want.memory, atol=1e-4)
