"""`vmem eval` end to end: held-out worlds through ingest and selection, with ablations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from checkpoints.bundle import bundle_available
from cli.app import app

pytestmark = pytest.mark.e2e


def test_eval_json_report_with_ablations_and_grid(
    tmp_path, prefect_harness, ray_local, model_cache
):
    workdir = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--seed",
            "7000",
            "--minutes",
            "1.5",
            "--videos",
            "1",
            "--grid",
            "1",
            "--grid-videos",
            "2",
            "--workdir",
            str(workdir),
            "--json",
        ],
        env={"HOME": str(model_cache)},  # the default model's cache lives under ~/.cache
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    for key in (
        "recall_at_k",
        "grounding_iou",
        "ablation_no_memory",
        "ablation_last_k",
        "bytes_per_video_hour",
        "answer_input_tokens",
    ):
        assert key in report, key
    assert 0.0 <= report["recall_at_k"] <= 1.0 and report["questions"] > 0
    assert report["answer_input_tokens"] == 4 * 8  # K x M with the defaults
    assert report["ablation_no_memory"]["questions"] == report["questions"]
    assert len(report["needle_grid"]) == 5  # one length x five depths
    for cell in report["needle_grid"]:  # two needle worlds per cell: 0, 1/2 or 2/2 found
        assert cell["videos"] == 2 and cell["recall"] in (0.0, 0.5, 1.0)
    assert len(list((workdir / "grid").glob("*.mp4"))) == 10
    if bundle_available():  # the trained default carries an answerer: answers are scored
        for variant in (report, report["ablation_no_memory"], report["ablation_last_k"]):
            accuracy = variant["answer_accuracy"]
            assert set(accuracy) <= {"counting", "history", "localisation", "ordering"}
            assert accuracy and all(0.0 <= v <= 1.0 for v in accuracy.values())
    assert Path(report["needle_grid_files"]["png"]).stat().st_size > 0
