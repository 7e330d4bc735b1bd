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
    assert report.failed_before == 0 and report.earlier_failures == []
    assert report.video_hours == 0.5 and report.video_hours_per_hour == 30.0
    text = ingest_markdown(report)
    assert "## Newly failed videos" in text and "| `/b.mp4` | open: /b.mp4: bad |" in text
    assert "| 1 | 1 | 4 | 0 | 113 |" in text and "Failed before" not in text


def test_earlier_failures_are_counted_apart_from_the_unchanged_and_the_new():
    earlier = [("/c.mp4", "open: /c.mp4: not a video |\nsecond line")]
    report = summarise("/archive", VMemConfig(), "enc", [], skipped=5, commits=0, earlier=earlier)
    assert (report.done, report.failed, report.skipped, report.failed_before) == (0, 0, 4, 1)
    assert report.counts_line() == (
        "0 done, 0 newly failed, 4 unchanged, 1 failed before (unchanged)"
    )
    text = ingest_markdown(report)
    assert "| 0 | 0 | 4 | 1 | 0 |" in text and "Newly failed" not in text
    assert "## Failed before, unchanged" in text
    assert "| `/c.mp4` | open: /c.mp4: not a video \\| second line |" in text  # one table row
