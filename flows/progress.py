"""Rich progress bars for long runs (quiet when stdout is not a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from schemas.records import VideoOutcome


class IngestProgress:
    """Two bars: videos finished (done or failed) and clips encoded."""

    def __init__(self, n_videos: int, console: Console | None = None):
        console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
            transient=False,
        )
        self._videos = self._progress.add_task("videos", total=n_videos, note="")
        self._clips = self._progress.add_task("clips", total=None, note="")
        self._failed = 0

    def __enter__(self) -> IngestProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def video_done(self, outcome: VideoOutcome) -> None:
        self._failed += outcome.status != "done"
        note = f"[red]{self._failed} failed" if self._failed else ""
        self._progress.update(self._videos, advance=1, note=note)

    def clips_done(self, n: int) -> None:
        self._progress.update(self._clips, advance=n)
