from __future__ import annotations

from flows.ingest import summarise
from flows.report import ingest_markdown
from schemas.config import VMemConfig
from schemas.records import StageError, VideoOutcome, VideoProbe, VideoTask


def test_summary_counts_and_markdown_names_failures():
    probe = VideoProbe(duration_s=1800.0, fps=30, width=64, height=64, codec="h264")
    outcomes = [
        VideoOutcome(VideoTask("/a.mp4", 1, "1"), "done", n_clips=113, probe=probe),
        VideoOutcome(
            VideoTask("/b.mp4", 1, "1"), "failed", error=StageError("open", "/b.mp4: bad")
        ),
    ]
    report = summarise("/archive", VMemConfig(), "enc", outcomes, skipped=4, commits=1)
    report.wall_seconds = 60.0
    assert (report.done, report.failed, report.skipped, report.clips) == (1, 1, 4, 113)
    assert report.video_hours == 0.5 and report.video_hours_per_hour == 30.0
    text = ingest_markdown(report)
    assert "/b.mp4" in text and "open: /b.mp4: bad" in text and "| 1 | 1 | 4 | 113 |" in text
