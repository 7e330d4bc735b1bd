"""How the CLI prints results: Rich tables for people, JSON lines for programs."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.records import IngestReport

if TYPE_CHECKING:
    from client.results import AskResult

STATUS_FIELDS = ["video_id", "uri", "status", "error", "n_clips", "duration_s", "attempts"]


def _jsonable(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


def print_json_lines(console: Console, rows: list[dict]) -> None:
    for row in rows:
        console.print_json(json.dumps({k: _jsonable(v) for k, v in row.items()}), indent=None)


def print_table(console: Console, rows: list[dict], json_out: bool, title: str = "") -> None:
    """Rows of dicts as a table that fits the console (or JSON lines, every value whole).

    For people: ``video_id`` shortened to its first 8 characters, a ``uri`` to its file
    name, ``t_start``/``t_end`` as m:ss, long text folded within its column."""
    if json_out:
        print_json_lines(console, rows)
        return
    if not rows:
        console.print("(no rows)")
        return
    table = Table(title=escape(title) or None, box=box.SIMPLE_HEAD, pad_edge=False)
    columns = list(rows[0])
    for column in columns:
        numeric = all(isinstance(r.get(column), int | float | type(None)) for r in rows)
        table.add_column(escape(column), justify="right" if numeric else "left", overflow="fold")
    shortened = False
    for row in rows:
        cells = [_cell(row.get(c), c) for c in columns]
        pairs = zip(columns, cells, strict=True)
        shortened |= any(c in SHORTENED and cell != str(row.get(c)) for c, cell in pairs)
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    if shortened:
        console.print("(ids and paths shortened: --json has them whole)", style="dim")


SHORT_ID = 8  # characters of a video id shown in tables (--json has all 16)
SHORTENED = {"video_id", "uri"}  # columns a table shows shortened


def _cell(value, column: str = "") -> str:
    if value is None:
        return ""
    if column == "video_id" and isinstance(value, str):
        return value[:SHORT_ID]
    if column == "uri" and isinstance(value, str):
        return PurePosixPath(value).name or value
    if column in ("t_start", "t_end") and isinstance(value, int | float):
        return clock(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def clock(seconds: float) -> str:
    """A time in a video as m:ss (h:mm:ss from an hour on), to the nearest second."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class VideoStatus(StrEnum):
    """The states of a catalog row (`vmem status --status ...`)."""

    done = "done"
    failed = "failed"
    deleted = "deleted"


def print_status(
    console: Console, rows: list[dict], json_out: bool, only: str | None = None
) -> None:
    """The catalog's videos (those in state ``only``, if given), then the totals per state.

    For people: a table that fits 80 columns (the file's name, its folder folded below it,
    the error wrapped) and a totals line; for programs (--json): the full rows, no totals."""
    shown = [row for row in rows if only is None or row.get("status") == only]
    if json_out:
        print_json_lines(console, [{k: row.get(k) for k in STATUS_FIELDS} for row in shown])
        return
    if shown:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
        table.add_column("video", overflow="fold", ratio=3, min_width=16)
        table.add_column("status", no_wrap=True)
        table.add_column("clips", justify="right", no_wrap=True)
        table.add_column("secs", justify="right", no_wrap=True)
        table.add_column("try", justify="right", no_wrap=True)
        table.add_column("error", overflow="fold", ratio=2)
        colour = {"done": "green", "failed": "red", "deleted": "yellow"}
        for row in sorted(shown, key=lambda r: r.get("uri") or ""):
            state = row.get("status") or ""
            table.add_row(
                escape(row.get("uri") or ""),
                f"[{colour.get(state, 'white')}]{state}[/]",
                str(row.get("n_clips") or 0),
                f"{row.get('duration_s') or 0:.0f}",
                str(row.get("attempts") or 0),
                escape(row.get("error") or ""),
            )
        console.print(table)
    elif rows:
        console.print(f"(no {only} videos)")
    counts = Counter(row.get("status") for row in rows)
    clips = sum(row.get("n_clips") or 0 for row in rows if row.get("status") == "done")
    hours = sum(row.get("duration_s") or 0.0 for row in rows if row.get("status") == "done")
    totals = ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in VideoStatus)
    console.print(
        f"{len(rows)} videos: {totals}; {clips:,} clips over {hours / 3600:.2f} video-hours"
        if rows
        else "(no videos in the catalog yet)"
    )


def print_selection(console: Console, result: AskResult, json_out: bool) -> None:
    """What ``vmem ask`` found. For people: the question, the answer once (when asked
    for), then one table row per clip, grouped by video, best video first, in 80 columns
    (the file name and a short id on a video's first row, times as m:ss). For programs
    (--json): one object per clip with every value whole (question, video_rank, video_id,
    uri, clip_index, t_start, t_end, score, answer)."""
    if json_out:
        print_json_lines(console, result.rows())
        return
    console.print(f"[bold]question:[/] {escape(result.question)}", soft_wrap=False)
    if result.answer is not None:
        console.print(f"[bold]answer:[/] {escape(result.answer)}")
    if not result.videos:
        console.print("(no memory matched)")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("video", overflow="fold", ratio=1)
    table.add_column("id", no_wrap=True)
    table.add_column("clip", justify="right", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    for rank, video in enumerate(result.videos, start=1):
        for i, clip in enumerate(video.clips):
            first = i == 0
            table.add_row(
                str(rank) if first else "",
                escape(video.name) if first else "",
                video.video_id[:SHORT_ID] if first else "",
                str(clip.clip_index),
                f"{clock(clip.t_start)}-{clock(clip.t_end)}",
                f"{clip.score:.3f}",
            )
    console.print(table)
    clips = sum(len(v.clips) for v in result.videos)
    console.print(
        f"{len(result.videos)} videos, {clips} clips (--json: full ids and URIs)", style="dim"
    )


def print_ingest_report(console: Console, report: IngestReport) -> None:
    console.print(
        f"[bold]ingest[/] {report.source}: [green]{report.done} done[/], "
        f"[red]{report.failed} newly failed[/], {report.skipped} unchanged, "
        f"{report.failed_before} failed before (unchanged); "
        f"{report.clips} clips, {report.video_hours:.3f} video-hours in "
        f"{report.wall_seconds:.1f} s ({report.video_hours_per_hour:.1f} video-hours/hour)"
    )
    for uri, error in report.failures:
        console.print(f"  [red]failed[/] {escape(uri)}: {escape(error)}", highlight=False)
    for uri, error in report.earlier_failures:  # not tried again: counted, not an error now
        console.print(f"  failed before (unchanged) {escape(uri)}: {escape(error)}")
    if report.deleted:  # gone from the source: catalog rows "deleted", memories pruned
        console.print(f"{report.deleted} deleted (gone from the source; memories pruned)")
        for uri in report.deleted_uris:
            console.print(f"  [yellow]deleted[/] {uri}")
    if report.version_tag:  # the tables as this run left them
        console.print(f"tables tagged {report.version_tag} (--as-of it reads them as now)")


def print_eval_report(console: Console, report: dict) -> None:
    """The evaluation as one table: the model, then each ablation, by metric."""
    variants = {"selection": report}
    for name in ("ablation_no_memory", "ablation_last_k"):
        if name in report:
            variants[name.removeprefix("ablation_")] = report[name]
    types = sorted({t for v in variants.values() for t in v.get("recall_by_type", {})})
    answered = sorted({t for v in variants.values() for t in v.get("answer_accuracy", {})})
    rows = []
    for name, metrics in variants.items():
        row = {
            "variant": name,
            "recall@K": metrics["recall_at_k"],
            "grounding IoU": metrics["grounding_iou"],
        }
        row.update({f"recall {t}": metrics["recall_by_type"].get(t) for t in types})
        if answered:
            row["answer IoU"] = metrics.get("answer_iou")
            accuracy = metrics.get("answer_accuracy", {})
            row.update({f"accuracy {t}": accuracy.get(t) for t in answered})
        rows.append(row)
    print_table(console, rows, False, title=f"encoder {report['encoder']}")
    console.print(
        f"{report['bytes_per_video_hour']:,} bytes per video-hour; the answering LM reads "
        f"{report['answer_input_tokens']} memory tokens whatever the video's length"
    )
    if "needle_grid_files" in report:
        console.print(f"needle grid: {report['needle_grid_files']}")


# ---- encoders and versions (vmem encoders / versions) ------------------------------------
def _size(n: int) -> str:
    """Bytes in the largest unit that keeps a number under 1000 (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def print_encoders(console: Console, rows: list[dict], current: str | None, json_out: bool) -> None:
    """One row per encoder: videos, clips, estimated bytes (``--json`` adds the videos it
    failed and its last ingest); ``>`` marks the current model's."""
    if json_out:
        print_json_lines(console, [{**r, "current": r["encoder"] == current} for r in rows])
        return
    if not rows:
        console.print("(no encoders: nothing ingested yet)")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("encoder", overflow="fold")
    for column in ("videos", "clips", "bytes*"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        mark = "> " if row["encoder"] == current else "  "
        table.add_row(
            mark + row["encoder"], f"{row['videos']:,}", f"{row['clips']:,}", _size(row["bytes"])
        )
    console.print(table)
    console.print(
        "> the current model's. *clips x the fixed-width memory columns (archive key, int8 "
        "tokens, scales): metadata and indexes not counted. --json adds failed videos and "
        "the last ingest."
    )


def print_versions(console: Console, rows: list[dict], total: int, json_out: bool) -> None:
    """Versions of the memories table, newest first, with their tags."""
    if json_out:
        print_json_lines(console, rows)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("rows", justify="right", no_wrap=True)
    table.add_column("tags", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(
            str(row["version"]),
            row["time"].strftime("%Y-%m-%d %H:%M:%S"),
            f"{row['rows']:,}",
            row["tags"],
        )
    console.print(table)
    if total > len(rows):
        console.print(f"the newest {len(rows)} of {total} versions (--last N shows more)")
