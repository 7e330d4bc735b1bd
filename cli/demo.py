"""The demo: procedural world videos (+ two broken files) -> ingest -> questions -> answers.

The worlds come from seeds that training never saw (``DEMO_SEEDS``); their questions are
generated from the ground truth, asked through the query stage like any user question
(filtered to their own video), and each generated answer is printed beside the truth.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from actors.runtime import BoundModel
from cli.views import print_ingest_report
from evaluation.asking import has_answerer, select_for
from evaluation.scoring import expected_answer
from flows.ingest import run_ingest
from world.questions import QA, make_questions
from world.render import write_world_once
from world.samples import write_bad_inputs
from world.scenes import make_world

DEMO_SEEDS = (7000, 7001)  # training uses 1000-2199 (held-out check 9000-9009), eval 5000+
DEMO_MINUTES = 3.0
BAD_INPUTS = ("text.mp4", "truncated_moov_end.mp4")  # shown failing cleanly in the report


def write_demo_archive(archive: Path) -> list[tuple[str, list[QA]]]:
    """World videos with ground truth and two broken files; the videos and their questions."""
    videos = []
    for seed in DEMO_SEEDS:
        world = make_world(seed, DEMO_MINUTES * 60.0)
        path = write_world_once(world, archive / f"world-{seed}.mp4")
        videos.append((str(path.resolve()), make_questions(world, seed, per_type=2)))
    if not any(archive.glob("broken-*")):
        scratch = archive.parent / "bad-inputs"
        for name, bad in write_bad_inputs(scratch).items():
            if name in BAD_INPUTS:
                bad.rename(archive / f"broken-{bad.name}")
        shutil.rmtree(scratch)
    return videos


def run_demo(workdir: Path, bound: BoundModel, console: Console) -> dict:
    """Ingest the demo archive under ``workdir`` with the bound model, ask each video its
    questions, print the answers beside the ground truth; returns {"questions", "right",
    "by_type"}."""
    archive = workdir / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    videos = write_demo_archive(archive)
    print_ingest_report(console, run_ingest(str(archive), bound.config, bound=bound))
    answering = has_answerer(bound)
    table = Table(title="questions about the demo worlds (each asked of its own video)")
    for column in ("video", "question", "answer", "truth", "", "selected clips (s)"):
        table.add_column(column)
    by_type: dict[str, list[bool]] = {}
    asked = iter(select_for(bound, videos, answer=answering))  # in the order of ``videos``
    for uri, qas in videos:
        for qa, clips, answer, spans in (next(asked) for _ in qas):
            truth = expected_answer(qa, spans)
            right = answer == truth
            by_type.setdefault(qa.qtype, []).append(right)
            said = ", ".join(f"{c.t_start:g}-{c.t_end:g}" for c in clips)
            mark = ("[green]right[/]" if right else "[red]wrong[/]") if answering else ""
            table.add_row(Path(uri).name, qa.question, answer or "-", truth, mark, said)
        table.add_section()
    console.print(table)
    summary = {
        "questions": sum(len(v) for v in by_type.values()),
        "right": sum(sum(v) for v in by_type.values()) if answering else None,
        "by_type": {t: f"{sum(v)}/{len(v)}" for t, v in sorted(by_type.items())},
    }
    if answering:
        right, asked = summary["right"], summary["questions"]
        console.print(f"{right} of {asked} answers right, per type: {summary['by_type']}")
    else:
        console.print(
            "[yellow]note:[/] this model has no trained answerer: only the selected memories "
            "are shown (train one with `vmem train`)."
        )
    return summary
