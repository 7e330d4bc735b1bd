"""How the CLI prints results: Rich tables for people, JSON lines for programs."""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Console
from rich.table import Table

from schemas.records import IngestReport, QueryResult

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
    """Rows of dicts as a table (or JSON lines)."""
    if json_out:
        print_json_lines(console, rows)
        return
    if not rows:
        console.print("(no rows)")
        return
    table = Table(title=title or None)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in rows[0]))
    console.print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return ""
    return str(value)


def print_status(console: Console, rows: list[dict], json_out: bool) -> None:
    print_table(console, [{k: row.get(k) for k in STATUS_FIELDS} for row in rows], json_out)


def selection_rows(result: QueryResult) -> list[dict]:
    extra = {"answer": result.answer} if result.answer is not None else {}
    return [{**clip.as_row(), **extra} for clip in result.clips]


def print_selection(console: Console, result: QueryResult, json_out: bool) -> None:
    if result.answer is not None and not json_out:
        console.print(f"[bold]answer:[/] {result.answer}")
    print_table(console, selection_rows(result), json_out, title=result.question)


def print_ingest_report(console: Console, report: IngestReport) -> None:
    console.print(
        f"[bold]ingest[/] {report.source}: [green]{report.done} done[/], "
        f"[red]{report.failed} failed[/], {report.skipped} skipped (unchanged); "
        f"{report.clips} clips, {report.video_hours:.3f} video-hours in "
        f"{report.wall_seconds:.1f} s ({report.video_hours_per_hour:.1f} video-hours/hour)"
    )
    for uri, error in report.failures:
        console.print(f"  [red]failed[/] {uri}: {error}")
    if report.deleted:  # gone from the source: catalog rows "deleted", memories pruned
        console.print(f"{report.deleted} deleted (gone from the source; memories pruned)")
        for uri in report.deleted_uris:
            console.print(f"  [yellow]deleted[/] {uri}")


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
