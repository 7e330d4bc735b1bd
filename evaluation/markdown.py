"""Turn a `vmem eval --json` report into the Markdown tables of docs/evaluation.md.

    .venv/bin/vmem eval --seed 5000 --minutes 10 --videos 3 --grid 1,5,15,30,60 --json \
        > docs/results/report-10min.json
    .venv/bin/python -m evaluation.markdown docs/results/report-10min.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TYPES = ("localisation", "history", "counting", "ordering")


def fmt(value) -> str:
    """Two decimals, or "-" for a figure the report does not have."""
    return "-" if value is None else f"{value:.2f}"


def variant_rows(report: dict) -> list[str]:
    """Recall, IoU and answer accuracy per type for the model and its two ablations."""
    rows = [
        "| variant | recall@K | grounding IoU | answer IoU | "
        + " | ".join(f"recall {t}" for t in TYPES)
        + " | "
        + " | ".join(f"answer {t}" for t in TYPES)
        + " |",
        "|---" * (3 + 2 * len(TYPES) + 1) + "|",
    ]
    variants = {
        "selection + memory (the model)": report,
        "(a) memory propagation off": report.get("ablation_no_memory"),
        "(b) last K clips, no selection": report.get("ablation_last_k"),
    }
    for name, metrics in variants.items():
        if not metrics:
            continue
        recall = metrics.get("recall_by_type", {})
        accuracy = metrics.get("answer_accuracy", {})
        cells = [
            name,
            fmt(metrics.get("recall_at_k")),
            fmt(metrics.get("grounding_iou")),
            fmt(metrics.get("answer_iou")),
            *(fmt(recall.get(t)) for t in TYPES),
            *(fmt(accuracy.get(t)) for t in TYPES),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def history_rows(report: dict) -> list[str]:
    """History answers per variant, split by whether only the carried memory holds the
    earlier scene (``history_by_clip``)."""
    rows = [
        "| variant | history, memory only | history, in the named scene's clip |",
        "|---|---|---|",
    ]
    variants = {
        "the model": report,
        "(a) memory propagation off": report.get("ablation_no_memory"),
        "(b) last K clips": report.get("ablation_last_k"),
    }
    for name, metrics in variants.items():
        split = (metrics or {}).get("history_by_clip")
        if not split:
            continue
        cells = [
            f"{fmt(split[p]['accuracy'])} ({split[p]['questions']})"
            for p in ("memory_only", "in_clip")
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows if len(rows) > 2 else []


def grid_rows(report: dict) -> list[str]:
    """Needle recall per video length (rows) and depth (columns), with each row's mean."""
    grid = report.get("needle_grid") or []
    if not grid:
        return []
    depths = sorted({row["depth"] for row in grid})
    lengths = sorted({row["minutes"] for row in grid})
    cell = {(row["minutes"], row["depth"]): row["recall"] for row in grid}
    rows = [
        "| video length \\ needle depth | " + " | ".join(f"{d:.0%}" for d in depths) + " | mean |",
        "|---" * (len(depths) + 2) + "|",
    ]
    for length in lengths:
        values = [cell.get((length, d)) for d in depths]
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known) if known else None
        rows.append(
            f"| {length:g} min | " + " | ".join(fmt(v) for v in values) + f" | {fmt(mean)} |"
        )
    return rows


def report_markdown(report: dict) -> str:
    """The variants table, the history split and the needle grid of one eval report."""
    lines = variant_rows(report)
    lines += [
        "",
        f"Questions with evidence: {report.get('questions')}; memory: "
        f"{report['bytes_per_video_hour']:,} bytes per video-hour; the answering LM reads "
        f"{report['answer_input_tokens']} memory tokens (K x M) whatever the video's length.",
    ]
    history = history_rows(report)
    if history:
        lines += ["", "History answers (questions in brackets):", "", *history]
    grid = grid_rows(report)
    if grid:
        per_cell = report["needle_grid"][0].get("videos", 1)
        lines += [
            "",
            f"Needle recall@K (one needle scene per video, {per_cell} video(s) per cell):",
            "",
            *grid,
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a `vmem eval --json` report")
    args = parser.parse_args()
    print(report_markdown(json.loads(args.report.read_text())))


if __name__ == "__main__":
    main()
