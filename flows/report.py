"""Human-readable summaries of runs (the Prefect artifact and the CLI share them)."""

from __future__ import annotations

from schemas.records import IngestReport


def ingest_markdown(report: IngestReport) -> str:
    """The markdown artifact of an ingest run."""
    lines = [
        f"# VMem ingest of `{report.source}`",
        "",
        "| videos done | newly failed | unchanged | failed before (unchanged) | clips | "
        "video hours | wall s | video-hours per hour |",
        "|---|---|---|---|---|---|---|---|",
        f"| {report.done} | {report.failed} | {report.skipped} | {report.failed_before} | "
        f"{report.clips} | "
        f"{report.video_hours:.3f} | {report.wall_seconds:.1f} | "
        f"{report.video_hours_per_hour:.1f} |",
        "",
        f"Database `{report.db}`, encoder `{report.encoder}`, {report.commits} commits.",
    ]
    if report.failures:
        lines += ["", "## Newly failed videos", "", "| video | error |", "|---|---|"]
        lines += [f"| `{uri}` | {_cell(error)} |" for uri, error in report.failures]
    if report.earlier_failures:
        lines += [
            "",
            "## Failed before, unchanged (not tried again; `vmem ingest --retry-failed`)",
            "",
            "| video | error |",
            "|---|---|",
        ]
        lines += [f"| `{uri}` | {_cell(error)} |" for uri, error in report.earlier_failures]
    if report.deleted:
        lines += [
            "",
            f"## Deleted videos ({report.deleted}: gone from the source, memories pruned)",
            "",
        ]
        lines += [f"- `{uri}`" for uri in report.deleted_uris]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (one line, no column breaks)."""
    return " ".join(text.split()).replace("|", "\\|")
