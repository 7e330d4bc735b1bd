"""The ``vmem`` command line without running a pipeline: shared options, config sections and
flags, one clear error for a bad model, one binding per run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from actors.runtime import BoundModel
from cli.app import app
from cli.options import PIPELINE_OPTIONS
from schemas.config import VMemConfig
from schemas.eval_config import EvalConfig
from schemas.records import AnswerReport, IngestReport
from schemas.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
FLAGS = {name: "--" + name.replace("_", "-") for name in PIPELINE_OPTIONS}
SHARED = {
    "ingest": PIPELINE_OPTIONS,
    "ask": PIPELINE_OPTIONS,
    "answer": PIPELINE_OPTIONS,
    "sql": PIPELINE_OPTIONS,
    "serve": PIPELINE_OPTIONS,
    "status": ("db", "config"),
    "demo": ("db", "config", "model"),
    "eval": ("config", "model"),
    "train": ("config",),
}
# each command that runs the model, with the rest of a command line that reaches the binding
MODEL_COMMANDS = {
    "ingest": ["ingest", "some-folder"],
    "ask": ["ask", "a question"],
    "answer": ["answer", "questions.jsonl", "-o", "out.parquet"],
    "sql": ["sql", "SELECT * FROM memories"],
    "serve": ["serve"],
    "demo": ["demo"],
}


def invoke(args: list[str], **kwargs):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"}, **kwargs)


@pytest.mark.parametrize("command", sorted(SHARED))
def test_the_shared_options_appear_on_every_command_that_takes_them(command):
    result = invoke([command, "--help"])
    assert result.exit_code == 0, result.output
    for name in SHARED[command]:
        assert FLAGS[name] in result.output, (command, name)
    for name in set(PIPELINE_OPTIONS) - set(SHARED[command]):
        assert FLAGS[name] not in result.output, (command, name)
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    assert "opts" not in {param.name for param in click_command.params}


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_a_bad_model_is_one_error_line_with_exit_2(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-such-checkpoint"
    result = invoke(
        [*MODEL_COMMANDS[command], "--db", str(tmp_path / "db"), "--model", str(missing)]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "no checkpoint" in lines[0] and str(missing) in lines[0]
    assert not (tmp_path / "db").exists()


@pytest.fixture
def bindings(monkeypatch) -> list[VMemConfig]:
    """Replaces the model binding with a cheap fake; the configs it was called with."""
    calls: list[VMemConfig] = []

    def bind(cfg: VMemConfig) -> BoundModel:
        calls.append(cfg)
        return BoundModel("ckpt", "ckpt@0+0", cfg, (8, 8, 64))

    monkeypatch.setattr("actors.runtime.bind_model", bind)
    return calls


def test_ingest_binds_once_and_hands_the_flow_the_bound_model(bindings, monkeypatch, tmp_path):
    seen = {}

    def flow(source, config, retry_failed=False, bound=None):
        seen.update(config=config, bound=bound)
        return IngestReport(source=source, db=config.storage.db, encoder=bound.encoder)

    monkeypatch.setattr("flows.ingest.ingest_flow", flow)
    result = invoke(["ingest", str(tmp_path), "--db", str(tmp_path / "db"), "--model", "m"])
    assert result.exit_code == 0, result.output
    assert len(bindings) == 1 and seen["bound"].config is bindings[0] is seen["config"]
    assert seen["config"].model.path == "m" and seen["config"].storage.db == str(tmp_path / "db")


def test_answer_binds_once_and_hands_the_flow_the_bound_model(bindings, monkeypatch, tmp_path):
    seen = {}

    def flow(questions_path, output, config, answers=False, bound=None):
        seen.update(bound=bound, answers=answers)
        return AnswerReport(output=output)

    monkeypatch.setattr("flows.answer.answer_flow", flow)
    config = tmp_path / "vmem.yaml"
    config.write_text("model:\n  untrained: true\nquery:\n  top_k: 2\n")
    args = ["answer", "q.jsonl", "-o", str(tmp_path / "o.parquet"), "--config", str(config)]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert len(bindings) == 1 and seen["bound"].config is bindings[0]
    assert bindings[0].model.untrained and bindings[0].query.top_k == 2
    assert seen["answers"] is False


@pytest.fixture
def trained(monkeypatch) -> list[TrainConfig]:
    """Replaces the training flow: the TrainConfig each ``vmem train`` would run."""
    runs: list[TrainConfig] = []

    def flow(cfg: TrainConfig) -> str:
        runs.append(cfg)
        return cfg.out_dir

    monkeypatch.setattr("flows.train.train_flow", flow)
    return runs


def test_train_reads_its_section_and_flags_override(trained, tmp_path):
    config = tmp_path / "vmem.yaml"
    config.write_text("train:\n  steps: 7\n  lr: 0.25\n  out_dir: from-file\nquery:\n  top_k: 2\n")
    assert invoke(["train", "--config", str(config)]).exit_code == 0
    assert (trained[-1].steps, trained[-1].lr, trained[-1].out_dir) == (7, 0.25, "from-file")
    assert trained[-1].k == TrainConfig().k
    result = invoke(["train", "--config", str(config), "--steps", "9", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (trained[-1].steps, trained[-1].lr, trained[-1].out_dir) == (
        9,
        0.25,
        str(tmp_path / "o"),
    )
    assert invoke(["train", "--smoke", "--config", str(config)]).exit_code == 0
    smoke = TrainConfig.smoke("from-file", steps=7, lr=0.25)
    assert trained[-1] == smoke  # the smoke recipe, with what the file and flags give
    assert invoke(["train", "--smoke"]).exit_code == 0
    assert trained[-1] == TrainConfig.smoke(TrainConfig().out_dir)


def test_train_reruns_a_saved_train_config(trained, tmp_path):
    record = REPO / "checkpoints" / "default" / "train_config.json"
    result = invoke(["train", "--config", str(record), "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    saved = TrainConfig.model_validate_json(record.read_text())
    assert trained[-1] == saved.model_copy(update={"out_dir": str(tmp_path / "again")})


@pytest.fixture
def evaluated(monkeypatch) -> list[EvalConfig]:
    """Replaces the evaluation flow: the EvalConfig each ``vmem eval`` would run."""
    runs: list[EvalConfig] = []

    def flow(cfg: EvalConfig) -> dict:
        runs.append(cfg)
        return {"config": cfg.model_dump(), "recall_at_k": float("nan")}

    monkeypatch.setattr("flows.eval.eval_flow", flow)
    return runs


def test_eval_reads_its_section_from_the_config_or_vmem_config(evaluated, tmp_path, monkeypatch):
    config = tmp_path / "vmem.yaml"
    config.write_text("eval:\n  seed: 42\n  videos: 2\n  per_type: 1\n")
    result = invoke(["eval", "--config", str(config), "--videos", "1", "--grid", "1,5", "--json"])
    assert result.exit_code == 0, result.output
    cfg = evaluated[-1]
    assert (cfg.seed, cfg.videos, cfg.per_type, cfg.grid_minutes) == (42, 1, 1, [1.0, 5.0])
    assert cfg.ablations and cfg.minutes == EvalConfig().minutes
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["config"]["seed"] == 42 and report["recall_at_k"] is None
    monkeypatch.setenv("VMEM_CONFIG", str(config))
    assert invoke(["eval", "--no-ablations", "--model", "ckpt", "--json"]).exit_code == 0
    assert (evaluated[-1].seed, evaluated[-1].ablations, evaluated[-1].model) == (42, False, "ckpt")
    assert invoke(["eval", "--config", str(tmp_path / "none.yaml")]).exit_code == 2
