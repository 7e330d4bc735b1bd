from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.config import ConfigError, VMemConfig, load_config, section_fields
from schemas.eval_config import EvalConfig
from schemas.records import Question, VideoTask, video_id_for
from schemas.settings import DEFAULT_DB, THIRD_PARTY_DEFAULTS, VMemSettings, quiet_third_party
from schemas.train_config import TrainConfig


def test_defaults_and_yaml_round_trip(tmp_path):
    path = tmp_path / "vmem.yaml"
    path.write_text("storage:\n  db: s3://bucket/db\nquery:\n  top_k: 6\n")
    cfg = load_config(path)
    assert cfg.storage.db == "s3://bucket/db" and cfg.query.top_k == 6
    assert cfg.decode.sample_fps == VMemConfig().decode.sample_fps


def test_bad_config_files_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("query:\n  top_k: 0\n")
    with pytest.raises(ConfigError, match="top_k"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("decode:\n  fps_typo: 2\n")
    with pytest.raises(ConfigError, match="fps_typo"):
        load_config(unknown)


def test_config_is_frozen_and_overrides_copy():
    cfg = VMemConfig()
    with pytest.raises(ValidationError):
        cfg.query.top_k = 3  # type: ignore[misc]
    other = cfg.with_overrides(storage={"db": "/tmp/x"}, model={"path": None})
    assert other.storage.db == "/tmp/x" and cfg.storage.db != "/tmp/x"


def test_fingerprint_follows_the_decode_config():
    base = VMemConfig()
    assert base.encoding_fingerprint() == VMemConfig().encoding_fingerprint()
    faster = base.with_overrides(decode={"sample_fps": 2.0})
    assert faster.encoding_fingerprint() != base.encoding_fingerprint()


def test_video_ids_are_stable_per_uri():
    task = VideoTask(uri="s3://b/a.mp4", size=1, etag="e")
    assert (
        task.video_id == video_id_for("s3://b/a.mp4") == VideoTask("s3://b/a.mp4", 2, "f").video_id
    )
    assert task.video_id != video_id_for("s3://b/b.mp4")


def test_question_validation():
    assert Question.model_validate({"question": "who?", "k": 2}).k == 2
    with pytest.raises(ValidationError):
        Question.model_validate({"question": ""})
    with pytest.raises(ValidationError):
        Question.model_validate({"question": "x", "unknown": 1})


REPO = Path(__file__).resolve().parents[2]


def test_train_and_eval_are_sections_of_the_one_tree(tmp_path):
    cfg = VMemConfig()
    assert cfg.train == TrainConfig() and cfg.eval == EvalConfig()
    path = tmp_path / "vmem.yaml"
    path.write_text(
        "storage:\n  db: /data/db\ntrain:\n  steps: 12\n  lr: 0.5\neval:\n  seed: 42\n"
        "  grid_minutes: [1, 5]\n"
    )
    cfg = load_config(path)
    assert (cfg.train.steps, cfg.train.lr, cfg.train.k) == (12, 0.5, TrainConfig().k)
    assert (cfg.eval.seed, cfg.eval.grid_minutes, cfg.eval.videos) == (42, [1.0, 5.0], 3)
    assert cfg.storage.db == "/data/db"
    with pytest.raises(ValidationError):
        cfg.train.steps = 3  # type: ignore[misc]
    # a command reads only what the file set in its section; its flags and defaults do the rest
    assert section_fields(path, "train") == {"steps": 12, "lr": 0.5}
    assert section_fields(path, "eval") == {"seed": 42, "grid_minutes": [1.0, 5.0]}
    assert section_fields(None, "train") == {}


def test_a_section_with_a_bad_field_names_it(tmp_path):
    path = tmp_path / "vmem.yaml"
    path.write_text("train:\n  no_such_field: 1\neval:\n  videos: 0\n")
    with pytest.raises(ConfigError, match="train.no_such_field") as caught:
        section_fields(path, "train")
    assert "eval.videos" in str(caught.value) and "\n" not in str(caught.value)


def test_a_saved_train_config_reads_as_the_train_section(tmp_path):
    record = REPO / "checkpoints" / "default" / "train_config.json"
    saved = TrainConfig.model_validate_json(record.read_text())  # the committed default's record
    assert TrainConfig(**section_fields(record, "train")) == saved
    flat = tmp_path / "seeds1.json"
    flat.write_text('{"seed": 1, "model_seed": 1}')  # an older flat training config
    assert section_fields(flat, "train") == {"seed": 1, "model_seed": 1}


def test_overrides_replace_given_fields_and_ignore_none(tmp_path):
    path = tmp_path / "vmem.yaml"
    path.write_text("storage:\n  db: /from/file\nmodel:\n  untrained: true\nquery:\n  top_k: 6\n")
    cfg = load_config(path, storage={"db": None}, model={"path": None, "seed": 3})
    assert (cfg.storage.db, cfg.model.untrained, cfg.model.seed) == ("/from/file", True, 3)
    assert load_config(path, storage={"db": "/from/flag"}).storage.db == "/from/flag"
    with pytest.raises(ConfigError, match="one or the other"):
        load_config(path, model={"path": "ckpt", "vision_model": "vit"})


def test_environment_enters_through_the_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("VMEM_DB", raising=False)
    assert VMemConfig().storage.db == DEFAULT_DB == VMemSettings().db
    monkeypatch.setenv("VMEM_DB", "s3://bucket/env-db")
    monkeypatch.setenv("VMEM_CONFIG", str(tmp_path / "vmem.yaml"))
    assert VMemConfig().storage.db == "s3://bucket/env-db"  # read when built, not at import
    assert VMemSettings().config == str(tmp_path / "vmem.yaml")
    path = tmp_path / "vmem.yaml"
    path.write_text("storage:\n  db: /from/file\n")
    assert load_config(path).storage.db == "/from/file"  # the file wins over the environment


def test_quiet_third_party_sets_defaults_and_keeps_what_is_set(monkeypatch):
    names = [name for env in THIRD_PARTY_DEFAULTS.values() for name in env]
    for name in names:
        monkeypatch.setenv(name, "x")  # restored (or removed again) after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    with warnings.catch_warnings(record=True) as caught:  # the filter is undone afterwards
        warnings.simplefilter("always")
        quiet_third_party(["ray"])
        assert os.environ["RAY_AUTH_MODE"] == "disabled"
        assert "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ
        quiet_third_party()
        assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
        assert os.environ["PREFECT_LOGGING_LEVEL"] == "DEBUG"  # already set: kept
        warnings.warn("lancedb fork support is experimental", stacklevel=1)
        warnings.warn("another warning", stacklevel=1)
    assert [str(w.message) for w in caught] == ["another warning"]


def test_the_example_config_agrees_with_the_tree():
    cfg = load_config(REPO / "deploy" / "vmem.example.yaml")
    assert cfg.model.path is None and not cfg.model.untrained  # the trained default
    assert cfg.train.out_dir == TrainConfig().out_dir and cfg.eval.seed == EvalConfig().seed
