"""Start or join Ray: a local Ray bound to 127.0.0.1 by default, a cluster by address."""

from __future__ import annotations

import os
from pathlib import Path

import ray

from models.registry import encoder_id, resolve_checkpoint
from schemas.config import RayConfig, VMemConfig


def ensure_ray(cfg: RayConfig) -> None:
    """Initialise Ray once per process (no-op when already connected)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False)
        return
    ray.init(
        num_cpus=cfg.num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )


def gpus_available() -> float:
    """GPUs the Ray cluster offers (0 on a CPU-only machine)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def resolve_encoder(cfg: VMemConfig) -> tuple[str, str]:
    """(checkpoint dir, encoder id) of the configured model; the default is built once."""
    cache = Path(cfg.model.cache_dir).expanduser()
    checkpoint = resolve_checkpoint(cfg.model.path, cfg.model.seed, cache)
    return str(checkpoint), f"{encoder_id(checkpoint)}+{cfg.encoding_fingerprint()}"
