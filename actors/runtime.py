"""Start or join Ray, and bind the configured model to the run's config."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ray

from checkpoints.registry import encoder_id, resolve_checkpoint
from models.config import VMemModelConfig
from models.select import archive_key_width
from schemas.config import RayConfig, VMemConfig
from schemas.settings import quiet_third_party, worker_env
from storage.archive import ArchiveError
from storage.uri import is_s3


def ensure_ray(cfg: RayConfig) -> None:
    """Initialise Ray once per process (no-op when already connected).

    A cluster (``address``) keeps its dashboard (deploy/ray-cluster.yaml serves it); only the
    local Ray started here for one run goes without. The Ray workers of this job get the
    same quiet environment as the driver (``worker_env``)."""
    if ray.is_initialized():
        return
    quiet_third_party(["ray", "lancedb"])  # no auth token or usage reports; no fork warning
    runtime_env = {"env_vars": worker_env()}
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False, runtime_env=runtime_env)
        return
    ray.init(
        num_cpus=cfg.num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
        runtime_env=runtime_env,
    )


def check_local_sources(uris: Iterable[str], cfg: RayConfig) -> None:
    """Refuse local paths as video sources on a Ray cluster of several nodes (Ray connected):
    a decode actor may run on a node where the path is not. ``ray.shared_local_paths`` says
    every node mounts them at the same path. ArchiveError (one line) when refused."""
    local = next((uri for uri in uris if not is_s3(uri)), None)
    if local is None or cfg.shared_local_paths:
        return
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if nodes > 1:
        raise ArchiveError(
            f"{local} is a local path, but the Ray cluster has {nodes} nodes and a decoder "
            "may run on any of them: put the archive on s3://, or set ray.shared_local_paths "
            "if every node mounts it at that same path"
        )


def gpus_available() -> float:
    """GPUs the Ray cluster offers (0 on a CPU-only machine)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


@dataclass(frozen=True)
class BoundModel:
    """The model a run uses: where it lives, its id on every row, and the table dims."""

    checkpoint: str
    encoder: str  # "<checkpoint>@<weights hash>+<decode config hash>"
    config: VMemConfig  # with decode.clip_frames / frame_size taken from the model
    dims: tuple[int, int, int]  # (archive key width, memory tokens M, hidden size D)


def bind_model(cfg: VMemConfig) -> BoundModel:
    """Resolve the checkpoint (building the default or composed model once), fit decode to it."""
    checkpoint = resolve_checkpoint(
        cfg.model.path,
        cfg.model.seed,
        Path(cfg.model.cache_dir).expanduser(),
        vision_model=cfg.model.vision_model,
        encoder_lm=cfg.model.encoder_lm,
        question_model=cfg.model.question_model,
        encoder_lm_layers=cfg.model.encoder_lm_layers,
        trained=not cfg.model.untrained,
    )
    model_cfg = VMemModelConfig.from_pretrained(checkpoint)
    image_size = model_cfg.vision().image_size
    image_size = image_size if isinstance(image_size, int) else int(image_size[0])
    t = cfg.decode.clip_frames
    if t is not None and t != model_cfg.clip_frames:
        raise ValueError(
            f"decode.clip_frames={t} but the model {checkpoint} encodes clips of "
            f"{model_cfg.clip_frames} frames: leave it unset or match the model"
        )
    cfg = cfg.with_overrides(
        decode={
            "clip_frames": model_cfg.clip_frames,
            "frame_size": cfg.decode.frame_size or image_size,
        }
    )
    dims = (
        archive_key_width(model_cfg.indicator_dim),
        model_cfg.memory_tokens,
        model_cfg.encoder().hidden_size,
    )
    encoder = f"{encoder_id(checkpoint)}+{cfg.encoding_fingerprint()}"
    return BoundModel(str(checkpoint), encoder, cfg, dims)
