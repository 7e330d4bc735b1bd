"""A tiny database for the service's tests: three videos encoded by the trained default
(random frames, so the answerer has something to answer from), written through the
MemoryWriter (memories, then catalog rows), plus one failed video; and the app over it
with a key of each scope."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient

from actors.encode import EncodeStage
from actors.query import QueryStage
from actors.runtime import bind_model
from actors.writer import MemoryWriter
from schemas.config import ModelConfig, QueryConfig, ServiceConfig, StorageConfig, VMemConfig
from schemas.records import Clip, StageError, VideoOutcome, VideoTask
from service.app import create_app
from service.auth import KeyStore

ARCHIVE = "/srv/archive"  # a server path clients must never see
CLIPS = {f"{ARCHIVE}/cam/a.mp4": 5, f"{ARCHIVE}/cam/b.mp4": 3, "s3://bucket/c.mp4": 2}
FAILED = f"{ARCHIVE}/cam/broken.mp4"


@dataclass
class TinyDb:
    cfg: VMemConfig
    checkpoint: str
    encoder: str
    video_ids: dict[str, str]  # uri -> video_id


def _clips(video_id: str, n: int, frames: int, size: int, seed: int) -> list[Clip]:
    rng = np.random.default_rng(seed)
    shape = (frames, size, size, 3)
    return [
        Clip(video_id, i, 16.0 * i, 16.0 * (i + 1), rng.integers(0, 255, shape, np.uint8), frames)
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def tiny_db(tmp_path_factory) -> TinyDb:
    root = tmp_path_factory.mktemp("service-db")
    cfg = VMemConfig(
        storage=StorageConfig(db=str(root / "db"), commit_videos=8),
        model=ModelConfig(cache_dir=str(root / "models")),
        query=QueryConfig(max_videos=3, top_k=2),
    )
    bound = bind_model(cfg)
    encode = EncodeStage(bound.checkpoint, device="cpu")
    encode.setup()
    model = encode.model
    writer = MemoryWriter(cfg.storage, bound.encoder, bound.dims)
    ids = {}
    for seed, (uri, n) in enumerate(CLIPS.items()):
        task = VideoTask(uri=uri, size=1000 + seed, etag="e", archive=uri.rsplit("/", 1)[0])
        clips = _clips(task.video_id, n, model.clip_frames, model.image_size, seed)
        records = [r for clip in clips for r in encode.encode_step([clip])]
        encode.release([task.video_id])
        writer.add(VideoOutcome(task, "done", n_clips=n), records)
        ids[uri] = task.video_id
    broken = VideoTask(uri=FAILED, size=1, etag="e", archive=ARCHIVE)
    error = StageError("decode", f"{FAILED} is not a video (moov atom not found)")
    writer.add(VideoOutcome(broken, "failed", error=error), [])
    ids[FAILED] = broken.video_id
    writer.flush()
    return TinyDb(bound.config, bound.checkpoint, bound.encoder, ids)


@dataclass
class Service:
    client: TestClient
    keys: KeyStore
    read: dict[str, str]  # Authorization headers of a read key and a write key
    write: dict[str, str]
    db: TinyDb


def make_service(db: TinyDb, **limits) -> Service:
    service_cfg = ServiceConfig(**limits)
    stage = QueryStage(db.checkpoint, db.encoder, db.cfg.storage, db.cfg.query)
    keys = KeyStore(db.cfg.storage, service_cfg.keys_refresh_s)
    read, write = keys.create("read").key, keys.create("write").key
    client = TestClient(create_app(stage, service_cfg, keys), raise_server_exceptions=False)
    bearer = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    return Service(client, keys, bearer(read), bearer(write), db)


@pytest.fixture(scope="session")
def service(tiny_db) -> Service:
    return make_service(tiny_db, page_size=2, search_page_videos=2)


@dataclass
class MediaDb:
    """Real videos ingested through the decode and encode stages and the writer (so the
    thumbnails are the ones ingest makes), and the service over them."""

    service: Service
    videos: dict[str, str]  # video_id -> source path
    gone: str  # the video_id whose source file was removed after ingest
    stage: QueryStage


@pytest.fixture(scope="session")
def media_db(tiny_db, tmp_path_factory) -> MediaDb:
    from actors.decode import DecodeStage
    from world.samples import write_synthetic_video

    root = tmp_path_factory.mktemp("media")
    archive = root / "archive"
    archive.mkdir()
    cfg = tiny_db.cfg.with_overrides(
        decode={"sample_fps": 4.0},
        storage={"db": str(root / "db")},  # 4 s clips
    )
    bound = bind_model(cfg)
    decode, encode = DecodeStage(bound.config.decode), EncodeStage(bound.checkpoint, "cpu")
    encode.setup()
    writer = MemoryWriter(bound.config.storage, bound.encoder, bound.dims)
    sources = {
        "kept": write_synthetic_video(archive / "kept.mp4", 10, size=(320, 240), gop_seconds=1),
        "gone": write_synthetic_video(archive / "gone.mp4", 5, seed=3, gop_seconds=1),
    }
    videos = {}
    for path in sources.values():
        task = VideoTask(uri=str(path), size=path.stat().st_size, etag="e", archive=str(archive))
        records, probe = [], None
        for chunk in decode.stream(task):
            assert chunk.error is None, chunk.error
            probe = probe or chunk.probe
            for clip in chunk.clips:  # one at a time: each carries the previous one's memory
                records += encode.encode_step([clip])
        encode.release([task.video_id])
        writer.add(VideoOutcome(task, "done", n_clips=len(records), probe=probe), records)
        videos[task.video_id] = str(path)
    writer.flush()
    sources["gone"].unlink()
    gone = next(v for v, p in videos.items() if p.endswith("gone.mp4"))
    # question files may come from the test's own folders only
    service_cfg = ServiceConfig(
        page_size=2, batch_uri_prefixes=[str(tmp_path_factory.getbasetemp())]
    )
    stage = QueryStage(bound.checkpoint, bound.encoder, bound.config.storage, bound.config.query)
    keys = KeyStore(bound.config.storage, service_cfg.keys_refresh_s)
    read, write = keys.create("read").key, keys.create("write").key
    client = TestClient(create_app(stage, service_cfg, keys), raise_server_exceptions=False)
    bearer = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    tiny = TinyDb(bound.config, bound.checkpoint, bound.encoder, {})
    service = Service(client, keys, bearer(read), bearer(write), tiny)
    return MediaDb(service, videos, gone, stage)
