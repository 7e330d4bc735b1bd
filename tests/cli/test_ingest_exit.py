"""`vmem ingest`'s exit status and summary, with the flow replaced by a fake (no Prefect, no
Ray): 0 when nothing newly failed, 3 when a video newly failed, 2 for a usage error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from actors.runtime import BoundModel
from cli.app import EXIT_NEW_FAILURES, app
from flows.ingest import IngestFailed, run_ingest
from schemas.config import VMemConfig
from schemas.records import IngestReport
from storage.archive import ArchiveError


@pytest.fixture(autouse=True)
def fake_binding(monkeypatch):
    monkeypatch.setattr(
        "actors.runtime.bind_model", lambda cfg: BoundModel("ckpt", "enc", cfg, (8, 8, 64))
    )


def fake_flow(monkeypatch, **counts) -> None:
    """The ingest flow, ending as a real one would with these counts: Failed (calling it
    raises IngestFailed) when a video newly failed, else with the report."""

    def flow(source, config, retry_failed=False, bound=None):
        report = IngestReport(source=source, db=config.storage.db, encoder="enc", **counts)
        if report.failed:
            raise IngestFailed(report)
        return report

    monkeypatch.setattr("flows.ingest.ingest_flow", flow)


def ingest(tmp_path):
    args = ["ingest", str(tmp_path), "--db", str(tmp_path / "db")]
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


def test_a_newly_failed_video_exits_3_after_the_summary_names_it(monkeypatch, tmp_path):
    fake_flow(monkeypatch, done=2, failed=1, failures=[("/a/bad.mp4", "open: [bad] file")])
    result = ingest(tmp_path)
    assert result.exit_code == EXIT_NEW_FAILURES == 3, result.output
    assert "2 done, 1 newly failed" in result.output
    assert "failed /a/bad.mp4: open: [bad] file" in result.output  # markup-like text kept
    assert "Traceback" not in result.output and result.exception.__class__ is SystemExit


def test_earlier_failures_that_did_not_change_are_counted_and_exit_0(monkeypatch, tmp_path):
    earlier = [("/a/bad.mp4", "open: not a video")]
    fake_flow(monkeypatch, skipped=2, failed_before=1, earlier_failures=earlier)
    result = ingest(tmp_path)
    assert result.exit_code == 0, result.output
    assert "0 newly failed, 2 unchanged, 1 failed before (unchanged)" in result.output
    assert "failed before (unchanged) /a/bad.mp4: open: not a video" in result.output


def test_a_source_that_cannot_be_listed_is_a_usage_error(monkeypatch, tmp_path):
    def flow(source, config, retry_failed=False, bound=None):
        raise ArchiveError(f"source folder not found: {source}")  # what list_source raises

    monkeypatch.setattr("flows.ingest.ingest_flow", flow)
    result = ingest(tmp_path)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: source folder not found: {tmp_path}"


def test_help_documents_each_exit_status():
    result = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "100"})
    text = " ".join(result.output.split())
    statuses = ["0 every listed video is done or unchanged", "3 one or more videos newly"]
    for status in [*statuses, "2 usage error", "Prefect flow run ends Failed"]:
        assert status in text, text


def test_run_ingest_returns_the_report_of_a_failed_run(monkeypatch):
    fake_flow(monkeypatch, failed=2)
    report = run_ingest("/archive", VMemConfig())
    assert report.failed == 2 and report.source == "/archive"
