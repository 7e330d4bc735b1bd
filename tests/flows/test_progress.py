"""The clips bar knows its total from the probed durations (and estimates the videos not yet
probed from their bytes); the start-up spinner gives way to the bars."""

from __future__ import annotations

import io

from rich.console import Console

from flows.progress import IngestProgress, expected_clips, startup
from schemas.config import DecodeConfig
from schemas.records import DecodedChunk, VideoOutcome, VideoProbe, VideoTask

DECODE = DecodeConfig(sample_fps=1.0, clip_frames=4)


class StubRunner:
    """Hands back the chunks it was given, one per call (no stages run)."""

    num_decoders = num_encoders = 1

    def __init__(self, chunks: dict[str, DecodedChunk]) -> None:
        self.chunks = chunks

    def start_decode(self, decoder: int, task: VideoTask) -> str:
        return task.video_id

    def next_chunk(self, stream: str) -> DecodedChunk:
        return self.chunks[stream]


def _probe(seconds: float) -> VideoProbe:
    return VideoProbe(duration_s=seconds, fps=30.0, width=64, height=48, codec="h264")


def _terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


def test_the_clips_total_follows_the_probes():
    tasks = [VideoTask(f"/v/{n}.mp4", size=1000, etag="1") for n in ("a", "b", "c")]
    chunks = {t.video_id: DecodedChunk(t.video_id, probe=_probe(20.0)) for t in tasks}
    with IngestProgress(tasks, DECODE, console=_terminal()) as progress:
        runner = progress.watch(StubRunner(chunks))
        clips = progress._progress.tasks[1]
        assert clips.total is None  # nothing probed: no guess
        runner.next_chunk(runner.start_decode(0, tasks[0]))
        # a 20 s video at 1 fps in clips of 4 frames: 5 clips; the other two, of the same
        # size, are estimated alike
        assert expected_clips(20.0, DECODE) == 5
        assert clips.total == 15
        progress.video_done(VideoOutcome(tasks[1], "failed"))  # it will give no clips
        assert clips.total == 10
        runner.next_chunk(runner.start_decode(0, tasks[2]))
        progress.clips_done(4)
        assert clips.total == 10 and clips.completed == 4
        assert runner.num_decoders == 1  # the rest of the runner goes straight through


def test_the_startup_spinner_stops_when_the_bars_start():
    import flows.progress as progress_module

    console = _terminal()
    with startup(console):
        assert progress_module._startup is not None
        with IngestProgress([], DECODE, console=console):
            assert progress_module._startup is None  # one live display at a time
    assert progress_module._startup is None
