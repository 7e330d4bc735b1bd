"""`vmem ask` and `vmem sql` read well: the answer once above the table, 80 columns (short
ids, file names, m:ss), and --json with every value whole."""

from __future__ import annotations

import json

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from cli.app import app
from cli.views import clock, print_selection, print_table
from client.results import AskResult, ClipHit, VideoHit
from tests.service.conftest import CLIPS, tiny_db  # noqa: F401

LONG = "s3://archive/" + "/".join(["a-rather-long-folder-name"] * 4)
ANSWER = "the red circle came first, then the blue star moved left twice " * 2


def _result() -> AskResult:
    videos = [
        VideoHit(
            str(n + 1) * 16,
            f"{LONG}/video-{n}-with-a-long-name.mp4",
            0.9 - n / 10,
            [
                ClipHit(i, 16.0 * i, 16.0 * (i + 1) + 3600 * (n == 2), 0.9 - i / 100)
                for i in range(3)
            ],
        )
        for n in range(3)
    ]
    return AskResult("which came first, the red circle or the blue star?", videos, ANSWER)


def _render(draw) -> list[str]:
    console = Console(width=80, record=True, force_terminal=False)
    draw(console)
    return console.export_text().splitlines()


def test_the_answer_is_printed_once_and_the_table_fits_80_columns():
    lines = _render(lambda c: print_selection(c, _result(), json_out=False))
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80, text
    words = " ".join(text.split())
    assert words.count("the red circle came first") == 2  # ANSWER says it twice: printed once
    assert sum("answer:" in line for line in lines) == 1
    assert "video-0-with-a-long-name.mp4" in text.replace("\n", "")  # the name, not the path
    assert "a-rather-long-folder-name" not in text
    assert "1" * 16 not in text and "1" * 8 in text and "3" * 8 in text  # short ids
    assert "0:16-0:32" in text and "1:00:48" in text  # m:ss, h:mm:ss past an hour
    firsts = [line.split()[:2] for line in lines if "-with-a-long-name" in line]
    assert [rank for rank, _ in firsts] == ["1", "2", "3"]  # a video's name on its first row


def test_json_carries_every_value_whole():
    lines = _render(lambda c: print_selection(c, _result(), json_out=True))
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 9 and rows[0]["uri"] == f"{LONG}/video-0-with-a-long-name.mp4"
    assert rows[3]["video_id"] == "2" * 16 and rows[3]["video_rank"] == 1
    assert {r["answer"] for r in rows} == {ANSWER}
    assert rows[0]["question"].startswith("which came first")


def test_sql_rows_fit_80_columns_with_ids_and_paths_shortened():
    rows = [
        {"video_id": f"{n:016x}", "uri": f"{LONG}/v{n}.mp4", "t_start": 75.0, "count(*)": n}
        for n in range(3)
    ]
    lines = _render(lambda c: print_table(c, rows, json_out=False))
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80, text
    assert "v2.mp4" in text and LONG not in text and "1:15" in text
    assert "--json has them whole" in text
    assert clock(59.6) == "1:00" and clock(3725) == "1:02:05"


@pytest.fixture
def config_file(tiny_db, tmp_path):  # noqa: F811
    path = tmp_path / "vmem.yaml"
    path.write_text(yaml.safe_dump(tiny_db.cfg.model_dump(mode="json")))
    return str(path)


def test_vmem_ask_and_sql_over_a_database(config_file):
    run = CliRunner().invoke
    asked = run(app, ["ask", "a red circle?", "--config", config_file, "--answer"],
                env={"COLUMNS": "80"})  # fmt: skip
    assert asked.exit_code == 0, asked.output
    lines = asked.output.splitlines()
    assert sum(line.startswith("answer:") for line in lines) == 1
    assert max(len(line) for line in lines) <= 80, asked.output
    counted = run(
        app,
        ["sql", "SELECT video_id, COUNT(*) AS n FROM memories GROUP BY video_id ORDER BY n DESC",
         "--config", config_file, "--json"],
    )  # fmt: skip
    assert counted.exit_code == 0, counted.output
    rows = [json.loads(line) for line in counted.output.splitlines() if line.strip()]
    assert [r["n"] for r in rows] == sorted(CLIPS.values(), reverse=True)
    bad = run(app, ["sql", "SELECT COUNT(*) FROM memories OFFSET 5000000", "--config", config_file])
    assert bad.exit_code == 2 and bad.output.startswith("error: SQL error: OFFSET must be")
