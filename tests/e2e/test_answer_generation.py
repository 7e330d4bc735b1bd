"""A trained checkpoint answers: smoke training, ingest with it, `vmem ask --answer`; and
the held-out evaluation selects as `vmem ask` does."""

from __future__ import annotations

import json
import shutil

import lancedb
import pytest
from typer.testing import CliRunner

from cli.app import app
from flows.ingest import ingest_flow
from flows.train import train_flow
from models.select import archive_key_width
from models.vmem import VMemModel
from schemas.config import ModelConfig
from schemas.train_config import TrainConfig
from world.questions import answer_vocabulary, tokenize_answer
from world.samples import write_synthetic_video

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness) -> str:
    """One smoke-trained checkpoint (with its answerer) for the tests of this file."""
    return train_flow(TrainConfig.smoke(str(tmp_path_factory.mktemp("ckpt") / "ckpt")))


def test_ask_answer_with_a_smoke_trained_model(tmp_path, trained, ray_local, make_config):
    checkpoint = trained
    write_synthetic_video(tmp_path / "archive" / "a.mp4", 20.0, seed=5)
    cfg = make_config(tmp_path / "db")
    cfg = cfg.model_copy(update={"model": ModelConfig(path=checkpoint)})
    assert ingest_flow(str(tmp_path / "archive"), cfg).done == 1
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "How many times does a red circle appear?",
            "--db",
            cfg.storage.db,
            "--model",
            checkpoint,
            "--answer",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    answers = {row["answer"] for row in rows}
    assert len(answers) == 1
    tokens = tokenize_answer(answers.pop())  # numbers come back joined: "12", "16-48"
    assert tokens and set(tokens) <= set(answer_vocabulary())
    # a trained default reads one indicator per memory token; the table stores each clip's
    # archive key (their mean, lifted to the unit sphere), which relevance() searches
    model = VMemModel.from_pretrained(checkpoint)
    assert model.config.per_token_indicators
    table = lancedb.connect(cfg.storage.db).open_table("memories")
    width = table.schema.field("archive_key").type.list_size
    assert width == archive_key_width(model.indicator_dim)
    assert "indicator" not in table.schema.names
    statement = "SELECT clip_index, score FROM memories ORDER BY relevance('a red circle') LIMIT 5"
    found = CliRunner().invoke(
        app, ["sql", statement, "--db", cfg.storage.db, "--model", checkpoint, "--json"]
    )
    assert found.exit_code == 0, found.output
    scores = [json.loads(line)["score"] for line in found.output.splitlines() if line.strip()]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)  # 20 s: 2 clips


def test_bulk_answers_column_and_a_model_without_answerer_refused(
    tmp_path, trained, ray_local, make_config
):
    import pyarrow.parquet as pq

    checkpoint = trained
    write_synthetic_video(tmp_path / "archive" / "a.mp4", 20.0, seed=6)
    cfg = make_config(tmp_path / "db")
    cfg = cfg.model_copy(update={"model": ModelConfig(path=checkpoint)})
    ingest_flow(str(tmp_path / "archive"), cfg)
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What colour was the shape before the red circle?"}\n')
    out = tmp_path / "out.parquet"
    args = ["answer", str(questions), "-o", str(out), "--db", cfg.storage.db, "--generate"]
    result = CliRunner().invoke(app, [*args, "--model", checkpoint])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert rows and all(isinstance(r["answer"], str) and r["answer"] for r in rows)
    bare = tmp_path / "no-answerer"  # the same encoder, saved without its answerer
    shutil.copytree(checkpoint, bare, ignore=shutil.ignore_patterns("answerer"))
    refused = CliRunner().invoke(app, [*args, "--model", str(bare)])
    assert refused.exit_code == 2 and "no answerer" in " ".join(refused.output.split())


def test_a_trained_checkpoint_bundles_without_the_frozen_text_model(trained, tmp_path):
    import torch

    from checkpoints.bundle import FROZEN_PREFIX, build_bundled_model, export_bundle
    from models.vmem import VMemModel

    bundle = export_bundle(trained, tmp_path / "bundle")
    assert (bundle / "train_config.json").is_file() and (bundle / "answerer").is_dir()
    rebuilt, saved = build_bundled_model(bundle), VMemModel.from_pretrained(trained)
    state = rebuilt.state_dict()
    assert any(k.startswith(FROZEN_PREFIX) for k in state)
    for key, value in saved.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_query_stage_selects_as_the_model_does_with_offered_alternatives(
    tmp_path, trained, ray_local, make_config
):
    """The query stage's video stage over stored memories picks the same K clips as
    ``select_memories`` over the model's queries for each question: the whole question, or
    the K shared between the two alternatives an ordering question offers."""
    import numpy as np
    import torch

    from actors.query import QueryStage
    from actors.runtime import bind_model
    from models.select import selection_parts
    from schemas.records import Question
    from storage.memories import encoder_scope
    from training.losses import select_memories

    write_synthetic_video(tmp_path / "archive" / "long.mp4", 112.0, seed=8)  # 7 clips > K
    cfg = make_config(tmp_path / "db")
    cfg = cfg.model_copy(update={"model": ModelConfig(path=trained)})
    assert ingest_flow(str(tmp_path / "archive"), cfg).done == 1
    bound = bind_model(cfg)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    questions = [
        "Which came first, the red circle moving left or the blue square?",
        "When does a red circle move left?",
    ]
    results = stage.select([Question(question=q) for q in questions])
    rows = sorted(
        stage.store.scan(encoder_scope(bound.encoder), ["video_id", "clip_index"]).to_pylist(),
        key=lambda r: r["clip_index"],
    )
    assert len(rows) == 7
    stored = stage.store.fetch_memories(
        [(r["video_id"], r["clip_index"]) for r in rows], bound.encoder
    )
    memories = torch.from_numpy(np.stack([stored[(r["video_id"], r["clip_index"])] for r in rows]))
    n, k = len(questions), cfg.query.top_k
    with torch.no_grad():
        indicators = stage.model.streaming.indicators(memories)  # read back as the stage does
        queries = selection_parts(stage.model, questions, memories[-1:].expand(n, -1, -1))
        _, index, _ = select_memories(
            queries, indicators.expand(n, -1, -1), memories.expand(n, -1, -1, -1), k, False
        )
    assert queries.shape[1] == 2  # the ordering question's two alternatives
    for result, expected in zip(results, index.tolist(), strict=True):
        assert result.error is None
        assert [c.clip_index for c in result.clips] == expected


def test_evaluation_and_vmem_ask_pick_the_same_clips(tmp_path, trained, ray_local, make_config):
    """On one stored archive, the held-out evaluation (``evaluation.asking.select_for``: each
    question asked of its own video) and ``vmem ask --where "uri = ..."`` pick the same clips,
    with the same scores, for the same questions."""
    from actors.runtime import bind_model
    from evaluation.asking import select_for
    from storage.db import sql_literal
    from storage.memories import MemoryStore, encoder_scope
    from world.questions import QA

    for name, seconds, seed in (("a.mp4", 112.0, 8), ("b.mp4", 64.0, 9)):  # 7 and 4 clips
        write_synthetic_video(tmp_path / "archive" / name, seconds, seed=seed)
    cfg = make_config(tmp_path / "db")
    cfg = cfg.model_copy(update={"model": ModelConfig(path=trained)})
    assert ingest_flow(str(tmp_path / "archive"), cfg).done == 2
    bound = bind_model(cfg)
    stored = MemoryStore(cfg.storage).scan(encoder_scope(bound.encoder), ["uri"])
    uris = sorted(set(stored.column("uri").to_pylist()))
    assert len(uris) == 2
    questions = [
        "Which came first, the red circle moving left or the blue square?",
        "When does a red circle move left?",
        "How many times does a green triangle appear?",
    ]
    videos = [(uri, [QA(q, "", "localisation", [], 0.0) for q in questions]) for uri in uris]
    asked = select_for(bound, videos)  # per video, per question
    pairs = [(uri, qa) for uri, qas in videos for qa in qas]
    assert len(asked) == len(pairs)
    for (uri, qa), (same_qa, clips, _, _) in zip(pairs, asked, strict=True):
        assert same_qa is qa and len(clips) == cfg.query.top_k  # both videos have >= K clips
        assert {c.uri for c in clips} == {uri}
        where = f"uri = {sql_literal(uri)}"
        result = CliRunner().invoke(
            app,
            [
                "ask",
                qa.question,
                "--db",
                cfg.storage.db,
                "--model",
                trained,
                "--where",
                where,
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.output.splitlines() if line.strip()]
        assert [(r["uri"], r["clip_index"]) for r in rows] == [(c.uri, c.clip_index) for c in clips]
        scores = [c.score for c in clips]
        assert [r["score"] for r in rows] == pytest.approx(scores, abs=1e-4)  # JSON: 4 decimals
