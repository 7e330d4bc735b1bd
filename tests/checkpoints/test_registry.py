from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import checkpoints.registry as registry
from checkpoints.registry import (
    build_default_model,
    encoder_id,
    load_model,
    resolve_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]


def test_build_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_default_model(seed=0), build_default_model(seed=0)
    assert torch.equal(torch.rand(1), expected_next)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = build_default_model(seed=1).state_dict()
    assert not all(torch.equal(sa[k], other[k]) for k in sa)
    assert not a.training


def test_resolve_checkpoint_builds_once_and_caches(tmp_path, monkeypatch):
    first = resolve_checkpoint(None, seed=0, cache_dir=tmp_path)
    assert re.fullmatch(r"tiny-seed0-[0-9a-f]{12}", first.name)
    assert (first / "config.json").is_file() and (first / "model.safetensors").is_file()

    def fail(seed: int):
        raise AssertionError("the cached checkpoint should have been reused")

    monkeypatch.setattr(registry, "build_default_model", fail)
    assert resolve_checkpoint(None, seed=0, cache_dir=tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp folder left


def test_resolve_checkpoint_concurrent_callers_agree(tmp_path):
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_checkpoint(None, 2, tmp_path)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]
    loaded = load_model(results[0]).state_dict()
    built = build_default_model(seed=2).state_dict()
    assert all(torch.equal(loaded[k], built[k]) for k in built)


def test_resolve_checkpoint_explicit_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(str(tmp_path), seed=0, cache_dir=tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert resolve_checkpoint(str(tmp_path), seed=0, cache_dir=tmp_path / "cache") == tmp_path


def test_load_model_and_encoder_id(tmp_path):
    path = resolve_checkpoint(None, seed=0, cache_dir=tmp_path)
    model = load_model(path)
    assert not model.training
    ident = encoder_id(path)
    assert re.fullmatch(rf"{path.name}@[0-9a-f]{{12}}", ident)
    copy = tmp_path / "copy"
    build_default_model(seed=0).save_pretrained(copy)
    assert encoder_id(copy).split("@")[1] == ident.split("@")[1]  # same bytes, same hash
    with torch.no_grad():
        model.conditioner.out.bias.add_(1.0)
    model.save_pretrained(tmp_path / "changed")
    assert encoder_id(tmp_path / "changed").split("@")[1] != ident.split("@")[1]


def test_same_weights_in_another_process(tmp_path):
    """Ray actors build the default model in their own process: the bytes must match."""
    script = (
        "import sys; from pathlib import Path; from checkpoints.registry import *; "
        "print(encoder_id(resolve_checkpoint(None, 0, Path(sys.argv[1]))))"
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "child")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    here = encoder_id(resolve_checkpoint(None, 0, tmp_path / "parent"))
    assert out == here
