"""The demo: a sample archive -> ingest -> a handful of questions -> a table of answers."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from actors.query import QueryStage
from actors.runtime import bind_model
from flows.ingest import ingest_flow
from flows.samples import write_sample_archive
from flows.views import print_ingest_report
from schemas.config import VMemConfig
from schemas.records import Question

DEMO_QUESTIONS = [
    "When does a red circle move to the left?",
    "Where is the bunny in the meadow?",
    "Show me people riding bikes.",
    "Which clip shows a man talking on a phone in a car?",
    "What happens at the very beginning of the video?",
]


def run_demo(workdir: Path, cfg: VMemConfig, console: Console) -> None:
    """Ingest the sample archive under ``workdir`` and print the selected memories."""
    archive = workdir / "archive"
    if not archive.exists():
        console.print(f"writing the sample archive to {archive} ...")
        write_sample_archive(archive)
    report = ingest_flow(str(archive), cfg)
    print_ingest_report(console, report)
    bound = bind_model(cfg)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    results = stage.select([Question(question=q) for q in DEMO_QUESTIONS])
    table = Table(title="selected memories (K per video, in time order)")
    for column in ("question", "video", "time range (s)", "score"):
        table.add_column(column)
    for result in results:
        for clip in result.clips:
            table.add_row(
                result.question,
                Path(clip.uri).name,
                f"{clip.t_start:7.1f} - {clip.t_end:7.1f}",
                f"{clip.score:.3f}",
            )
        table.add_section()
    console.print(table)
    console.print(
        "[yellow]note:[/] the default model has random weights until it is trained, so these "
        "selections show the mechanics (K clips per video, time order, scores), not meaning."
    )
