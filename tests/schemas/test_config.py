from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.config import ConfigError, VMemConfig, load_config
from schemas.records import Question, VideoTask, video_id_for


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
