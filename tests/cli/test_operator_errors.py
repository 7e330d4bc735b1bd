"""The operator's mistakes, each one line naming the problem (exit 2), never a traceback;
and `vmem status` readable at 80 columns with --status and totals."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from schemas.config import StorageConfig
from storage.db import connect


@pytest.fixture
def places(tmp_path):
    """A file, an empty database folder, and paths that do not exist."""
    (tmp_path / "a-file").write_text("not a database")
    empty = tmp_path / "empty-db"
    connect(StorageConfig(db=str(empty)))  # a database folder with no tables yet
    return {
        "file": str(tmp_path / "a-file"),
        "empty": str(empty),
        "missing": str(tmp_path / "no-such-db"),
        "no_source": str(tmp_path / "no-such-folder"),
    }


MISTAKES = {  # what the operator typed -> words the one line must hold
    "empty question": (["ask", "", "--db", "{empty}"], "question is empty"),
    "blank question": (["ask", "   ", "--db", "{empty}"], "question is empty"),
    "k of 0": (["ask", "what", "-k", "0", "--db", "{empty}"], "-k 0"),
    "db is a file": (["status", "--db", "{file}"], "is a file"),
    "ask with a db that is a file": (["ask", "what", "--db", "{file}"], "is a file"),
    "sql on an empty database": (
        ["sql", "SELECT * FROM memories", "--db", "{empty}"],
        "no memories",
    ),
    "ask on an empty database": (["ask", "what", "--db", "{empty}"], "no memories"),
    "status of a database that does not exist": (["status", "--db", "{missing}"], "no database"),
    "missing source folder": (
        ["ingest", "{no_source}", "--db", "{empty}"],
        "source folder not found",
    ),
    "bad --status": (["status", "--status", "gone", "--db", "{empty}"], "gone"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_mistake_is_one_line_and_exit_2(mistake, places):
    args, words = MISTAKES[mistake]
    args = [a.format(**places) for a in args]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    output = result.output.strip()
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert words in output, output
    if mistake != "bad --status":  # Typer's own usage errors are a small box
        assert len(output.splitlines()) == 1, output
    assert not Path(places["missing"]).exists()  # a mistyped --db is not created by a read


def _catalog_rows():
    long = "s3://archive/videos/" + "/".join(["a-rather-long-folder-name"] * 3)
    return [
        {"uri": f"{long}/one.mp4", "status": "done", "n_clips": 12, "duration_s": 190.0},
        {"uri": f"{long}/two.mp4", "status": "failed", "error": "open: moov atom not found " * 3},
        {"uri": "/data/three.mp4", "status": "deleted", "n_clips": 0},
        {"uri": "/data/four.mp4", "status": "done", "n_clips": 3, "duration_s": 40.0},
    ]


def test_status_fits_80_columns_filters_and_totals():
    from rich.console import Console

    from cli.views import print_status

    console = Console(width=80, record=True, force_terminal=False)
    print_status(console, _catalog_rows(), json_out=False)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "4 videos: 2 done, 1 failed, 1 deleted; 15 clips" in text
    assert "one.mp4" in text and "moov atom" in text

    console = Console(width=80, record=True)
    print_status(console, _catalog_rows(), json_out=False, only="failed")
    text = console.export_text()
    assert "two.mp4" in text and "one.mp4" not in text and "four.mp4" not in text
    assert "4 videos: 2 done, 1 failed, 1 deleted" in text  # the totals are of all videos
