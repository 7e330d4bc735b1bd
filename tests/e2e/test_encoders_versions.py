"""Two encoders in one database, switching back without re-encoding, pruning, maintenance,
and reading as of an earlier ingest's tag: real Ray, Prefect, LanceDB and the vmem CLI."""

from __future__ import annotations

import json
from pathlib import Path

import lancedb
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from flows.ingest import ingest_flow

pytestmark = pytest.mark.e2e


def vmem(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    if ok:
        assert result.exit_code == 0, result.output
    return result


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def config_file(cfg, path: Path) -> str:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def test_two_encoders_switch_back_prune_maintain_and_as_of(
    tmp_path, prefect_harness, ray_local, make_config
):
    from world.samples import write_synthetic_video

    archive = tmp_path / "archive"
    first = [write_synthetic_video(archive / f"v{i}.mp4", 4.0 + i, seed=40 + i) for i in (0, 1)]
    db = tmp_path / "db"
    cfg_a = make_config(db)
    cfg_b = cfg_a.with_overrides(model={"seed": 1})  # another tiny model: another encoder id
    file_a = config_file(cfg_a, tmp_path / "a.yaml")

    run_a = ingest_flow(str(archive), cfg_a)
    run_b = ingest_flow(str(archive), cfg_b)
    assert (run_a.done, run_b.done) == (2, 2) and run_a.encoder != run_b.encoder
    assert run_a.version_tag and run_a.version_tag.startswith("ingest-")

    listed = {
        r["encoder"]: r for r in json_lines(vmem("encoders", "--config", file_a, "--json").output)
    }
    assert set(listed) == {run_a.encoder, run_b.encoder}
    for encoder, run in ((run_a.encoder, run_a), (run_b.encoder, run_b)):
        assert listed[encoder]["videos"] == 2 and listed[encoder]["clips"] == run.clips
        assert listed[encoder]["bytes"] > 0
    assert listed[run_a.encoder]["current"] and not listed[run_b.encoder]["current"]
    table = vmem("encoders", "--config", file_a).output
    assert max(len(line) for line in table.splitlines()) <= 80 and "> " in table

    # back to A, with one new video: only the new one is encoded
    newest = write_synthetic_video(archive / "v2.mp4", 5.0, seed=42)
    back = ingest_flow(str(archive), cfg_a)
    assert (back.done, back.skipped, back.failed) == (1, 2, 0)
    assert back.version_tag and back.version_tag != run_a.version_tag

    # as of the first run's tag: the memories and the catalog as they were then
    first_ids = {_video_id(p) for p in first}
    sql = "SELECT video_id FROM memories"
    then = json_lines(
        vmem("sql", sql, "--config", file_a, "--as-of", run_a.version_tag, "--json").output
    )
    now = json_lines(vmem("sql", sql, "--config", file_a, "--json").output)
    assert {r["video_id"] for r in then} == first_ids
    assert {r["video_id"] for r in now} == first_ids | {_video_id(newest)}
    videos_then = vmem(
        "sql",
        "SELECT video_id FROM videos",
        "--config",
        file_a,
        "--as-of",
        run_a.version_tag,
        "--json",
    )
    assert {r["video_id"] for r in json_lines(videos_then.output)} == first_ids
    asked = vmem("ask", "a red circle", "--config", file_a, "--as-of", run_a.version_tag, "--json")
    assert {r["video_id"] for r in json_lines(asked.output)} <= first_ids
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "a blue star", "id": "q1"}) + "\n")
    out = tmp_path / "then.parquet"
    vmem("answer", str(questions), "-o", str(out), "--config", file_a, "--as-of", run_a.version_tag)
    answered = pq.read_table(out).to_pylist()
    assert answered and {r["video_id"] for r in answered} <= first_ids  # in the Ray actors too
    bad = vmem("sql", sql, "--config", file_a, "--as-of", "yesterday-ish", ok=False)
    assert bad.exit_code == 2 and "--as-of 'yesterday-ish' is not" in bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1

    # prune: the current encoder only with --force; --keep-latest removes the others
    refused = vmem("prune", "--encoder", run_a.encoder, "--config", file_a, ok=False)
    assert refused.exit_code == 2 and "--force" in refused.output
    pruned = vmem("prune", "--keep-latest", "--config", file_a).output.strip().splitlines()
    assert pruned == [f"pruned {run_b.encoder}: {run_b.clips:,} clips, 2 ledger entries"]
    left = json_lines(vmem("encoders", "--config", file_a, "--json").output)
    assert [r["encoder"] for r in left] == [run_a.encoder]

    # maintenance: compact, drop old versions and retired tags, indexes refreshed
    before = json_lines(vmem("versions", "--config", file_a, "--json", "--last", "1000").output)
    lines = vmem("maintain", "--config", file_a, "--keep-days", "0").output
    assert "memories:" in lines and "videos:" in lines and "video_encoders:" in lines
    assert "2 ingest tags retired" in lines  # all but the newest, at a retention of 0 days
    memories = lancedb.connect(str(db)).open_table("memories")  # 3 clips: far below the ANN's
    indexed = {ix.columns[0]: ix.name for ix in memories.list_indices()}  # 10k, scalars all
    assert {"video_id", "encoder", "archive", "recorded_at", "tags"} <= set(indexed)
    assert memories.index_stats(indexed["video_id"]).num_unindexed_rows == 0
    after = json_lines(vmem("versions", "--config", file_a, "--json", "--last", "1000").output)
    assert len(after) < len(before)
    assert back.version_tag in {t for r in after for t in r["tags"].split(", ")}
    gone = vmem("sql", sql, "--config", file_a, "--as-of", run_a.version_tag, ok=False)
    assert gone.exit_code == 2 and "Traceback" not in gone.output
    assert {
        r["video_id"] for r in json_lines(vmem("sql", sql, "--config", file_a, "--json").output)
    } == (first_ids | {_video_id(newest)})
    again = ingest_flow(str(archive), cfg_a)  # after all this, still nothing to re-encode
    assert (again.done, again.skipped) == (0, 3)


def _video_id(path: Path) -> str:
    from storage.archive import list_source

    return next(t.video_id for t in list_source(str(path.parent)) if t.uri.endswith(path.name))
