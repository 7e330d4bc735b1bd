"""Where encoder checkpoints come from, and the id that stamps every stored memory.

The tiny default model is built from a seed and materialised once into a cache folder, so
every process (driver, Ray actors) loads the very same bytes and gets the same encoder id.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from models.config import VMemModelConfig
from models.vmem import VMemModel

hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output (JSON lines)

_HASH_CHUNK = 1 << 20
_BUILD_LOCK = threading.Lock()  # the seeded build uses the global RNG: one thread at a time


def build_default_model(seed: int = 0) -> VMemModel:
    """The tiny default model with random weights; same seed -> bitwise identical weights.

    The global RNG is forked, so building a model does not disturb the caller's randomness.
    Returned in eval mode.
    """
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VMemModel(VMemModelConfig())
    return model.eval()


def default_config_hash() -> str:
    """12 hex digits of the default config, so a changed default gets a new cache folder."""
    payload = json.dumps(VMemModelConfig().to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def resolve_checkpoint(path: str | None, seed: int, cache_dir: Path) -> Path:
    """The checkpoint folder to load: ``path`` itself, or the cached tiny default model.

    For ``path=None`` the default model is saved into ``cache_dir/tiny-seed{seed}-{hash}``
    once: it is written to a temporary sibling folder and renamed into place, so concurrent
    processes either win the rename or find the finished folder, never a partial one.
    """
    if path is not None:
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no checkpoint (config.json) in {folder}")
        return folder
    cache_dir = Path(cache_dir)
    target = cache_dir / f"tiny-seed{seed}-{default_config_hash()}"
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        build_default_model(seed).save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(path: str | Path, device: str | torch.device = "cpu") -> VMemModel:
    """A saved VMem checkpoint, on ``device``, in eval mode."""
    model = VMemModel.from_pretrained(str(path))
    return model.to(device).eval()


def encoder_id(path: str | Path) -> str:
    """``<folder name>@<12 hex>``: sha256 over config.json and the safetensors weight files.

    Two folders holding the same bytes share the hash; any change of weights or config
    changes it, so stored memories name exactly the encoder that produced them.
    """
    folder = Path(path)
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    if len(files) < 2 or not files[0].is_file():
        raise FileNotFoundError(f"no config.json + *.safetensors checkpoint in {folder}")
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return f"{folder.name}@{digest.hexdigest()[:12]}"
