"""Failure semantics a scheduler can read, with real Ray, real Prefect and real LanceDB.

A decode and an encode actor killed mid-run are restarted by Ray within the same run: the
encoder's videos start again from clip 0, the decoder's streams are replayed where they
were; every video ends done once, with the memories of a run that was not disturbed. A
video that newly failed makes `vmem ingest` exit 3 and the flow run end Failed; the same
unchanged failure on the next run is counted, exits 0, and the run ends Completed.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import lance
import numpy as np
import pytest
import ray
import yaml
from typer.testing import CliRunner

from actors.decode import DecodeStage
from actors.encode import EncodeStage
from actors.ray_runner import RayStageRunner
from actors.runtime import bind_model
from actors.scheduler import StageCallFailed
from cli.app import app
from flows.ingest import run_ingest
from schemas.records import VideoTask
from storage.catalog import Catalog
from storage.memories import MemoryStore
from storage.uri import join
from world.samples import write_synthetic_video

from .conftest import expected_clips

pytestmark = pytest.mark.e2e

SECONDS = {"a.mp4": 7.0, "b.mp4": 5.0, "c.mp4": 9.0}
CLIP_FRAMES = 16  # the untrained default model's T
WIDE = {"COLUMNS": "400"}  # one line per printed line


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("restart-archive")
    for i, (name, seconds) in enumerate(SECONDS.items()):
        write_synthetic_video(root / name, seconds, seed=20 + i)
    return root


class FaultyRunner(RayStageRunner):
    """The production runner, plus two faults: at the 3rd decoded chunk taken it SIGKILLs
    the first decode actor's process; right after the 4th encode step is sent it kills the
    encode actor with ``ray.kill(no_restart=False)``. Ray restarts both."""

    last: FaultyRunner | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        FaultyRunner.last = self
        self.steps = self.chunks = 0
        self.lost = Counter()  # StageCallFailed(actor_lost) seen, per stage
        self.killed: dict[str, int] = {}  # stage -> pid killed
        self.restarted: dict[str, int] = {}  # stage -> pid when the run ended

    def next_chunk(self, stream):
        self.chunks += 1
        if self.chunks == 3:
            self.killed["decode"] = _pid(self.decoders[0])
            os.kill(self.killed["decode"], signal.SIGKILL)
        return self._counting_lost("decode", super().next_chunk, stream)

    def submit_encode(self, encoder, clips):
        step = super().submit_encode(encoder, clips)
        self.steps += 1
        if self.steps == 4:
            self.killed["encode"] = _pid(self.encoders[0])
            ray.kill(self.encoders[0], no_restart=False)
        return step

    def step_records(self, step):
        return self._counting_lost("encode", super().step_records, step)

    def close(self) -> None:
        self.restarted = {"decode": _pid(self.decoders[0]), "encode": _pid(self.encoders[0])}
        super().close()

    def _counting_lost(self, stage, call, handle):
        try:
            return call(handle)
        except StageCallFailed as exc:
            self.lost[stage] += exc.actor_lost
            raise


def _pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda stage: os.getpid()))


def _alone(cfg, archive: Path) -> dict[tuple[str, int], np.ndarray]:
    """Archive keys of each video encoded alone, in this process: what an undisturbed run
    stores, by (file name, clip index)."""
    bound = bind_model(cfg)
    decode, encode = DecodeStage(bound.config.decode), EncodeStage(bound.checkpoint, "cpu")
    keys = {}
    for name in SECONDS:
        task = VideoTask(str(archive / name), 0, "e")
        for chunk in decode.stream(task):
            for record in encode.encode_step(chunk.clips):
                keys[(name, record.clip_index)] = record.archive_key
        encode.release([task.video_id])
    return keys


def test_a_decode_and_an_encode_actor_killed_mid_run_are_survived_in_the_same_run(
    tmp_path, monkeypatch, prefect_harness, ray_local, make_config, archive
):
    monkeypatch.setattr("actors.pipeline.RayStageRunner", FaultyRunner)
    cfg = make_config(tmp_path / "db", batch_videos=2, num_actors=1, num_decoders=2)
    cfg = cfg.with_overrides(decode={"sample_fps": 8.0, "chunk_clips": 1})  # clips in flight
    report = run_ingest(str(archive), cfg)
    assert report.failures == [] and (report.done, report.failed) == (len(SECONDS), 0)

    runner = FaultyRunner.last
    assert runner is not None and set(runner.killed) == {"decode", "encode"}
    for stage, pid in runner.killed.items():
        assert runner.restarted[stage] != pid, f"Ray restarted the {stage} actor"
    assert runner.lost["encode"] >= 1  # steps past clip 0 found no memory: videos restarted
    assert runner.lost["decode"] == 0  # Ray replayed the cut streams where they were

    table = lance.dataset(join(cfg.storage.db, "memories.lance")).to_table(
        columns=["video_id", "clip_index", "encoder", "uri", "archive_key"]
    )
    rows = table.to_pylist()
    keys = Counter((r["video_id"], r["clip_index"], r["encoder"]) for r in rows)
    assert max(keys.values()) == 1, "no memory row is stored twice"
    catalog = {Path(r["uri"]).name: r for r in Catalog(MemoryStore(cfg.storage)).all().to_pylist()}
    per_file = Counter(Path(r["uri"]).name for r in rows)
    for name, seconds in SECONDS.items():
        want = expected_clips(seconds, cfg.decode.sample_fps, CLIP_FRAMES)
        assert want >= 3 and per_file[name] == want, name
        row = catalog[name]
        assert (row["status"], row["n_clips"], row["attempts"]) == ("done", want, 1), row
    alone = _alone(cfg, archive)  # restarted videos were encoded from clip 0, memory carried
    assert len(alone) == len(rows)
    for r in rows:
        want_key = alone[(Path(r["uri"]).name, r["clip_index"])]
        np.testing.assert_allclose(r["archive_key"], want_key, atol=1e-3)


def _latest_ingest_run():
    """The final state of the newest ingest flow run in Prefect, and its report artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["vmem-ingest"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    return run.state, artifact.data


def test_cli_exit_status_and_flow_state_follow_new_failures(
    tmp_path, prefect_harness, ray_local, make_config, archive
):
    source = tmp_path / "archive"
    source.mkdir()
    (source / "good.mp4").write_bytes((archive / "a.mp4").read_bytes())
    (source / "broken.mp4").write_text("not a video at all\n" * 10)
    cfg = make_config(tmp_path / "db")
    config_file = tmp_path / "vmem.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args = ["ingest", str(source), "--config", str(config_file)]

    first = CliRunner().invoke(app, args, env=WIDE)
    assert first.exit_code == 3, first.output
    assert "1 done, 1 newly failed" in first.output and "broken.mp4" in first.output
    state, markdown = _latest_ingest_run()
    assert state.is_failed() and "1 newly failed" in state.message
    assert "## Newly failed videos" in markdown and "broken.mp4" in markdown

    again = CliRunner().invoke(app, args, env=WIDE)  # nothing changed: the old failure is counted
    assert again.exit_code == 0, again.output
    assert "0 newly failed, 1 unchanged, 1 failed before (unchanged)" in again.output
    state, markdown = _latest_ingest_run()
    assert state.is_completed()
    assert "## Failed before, unchanged" in markdown and "broken.mp4" in markdown

    retried = CliRunner().invoke(
        app, [*args, "--retry-failed"], env=WIDE
    )  # tried, and failed again
    assert retried.exit_code == 3, retried.output
    assert "0 done, 1 newly failed, 1 unchanged" in retried.output
    assert _latest_ingest_run()[0].is_failed()
