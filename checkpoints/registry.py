"""Where encoder checkpoints come from, and the id that stamps every stored memory.

The tiny default model (or one composed from pretrained parts, checkpoints.compose) is built from
a seed and materialised once into a cache folder, so every process (driver, Ray actors)
loads the very same bytes and gets the same encoder id.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from checkpoints.bundle import bundle_available, bundle_digest, write_bundled_checkpoint
from checkpoints.compose import compose_model
from models.config import VMemModelConfig
from models.vmem import VMemModel

hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output (JSON lines)

_HASH_CHUNK = 1 << 20
_BUILD_LOCK = threading.Lock()  # the seeded build uses the global RNG: one thread at a time


def build_default_model(
    seed: int = 0, per_token_indicators: bool = False, motion_features: bool = False
) -> VMemModel:
    """The tiny default model with random weights; same seed -> bitwise identical weights
    (``per_token_indicators``, ``motion_features``: see ``VMemModelConfig``).

    The global RNG is forked, so building a model does not disturb the caller's randomness.
    Returned in eval mode.
    """
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = VMemModelConfig(
            per_token_indicators=per_token_indicators, motion_features=motion_features
        )
        model = VMemModel(config)
    return model.eval()


def default_config_hash() -> str:
    """12 hex digits of the default config, so a changed default gets a new cache folder."""
    payload = json.dumps(VMemModelConfig().to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def resolve_checkpoint(
    path: str | None,
    seed: int,
    cache_dir: Path,
    *,
    vision_model: str | None = None,
    encoder_lm: str | None = None,
    question_model: str | None = None,
    encoder_lm_layers: int | None = None,
    trained: bool = False,
) -> Path:
    """The checkpoint folder to load: ``path`` itself, or a model built once into the cache.

    Without ``path`` the model is, with ``trained``, the trained default committed in
    ``checkpoints/default`` (``trained-{hash}``, see checkpoints.bundle); otherwise the tiny default
    with random weights (``tiny-seed{seed}-{hash}``); or, when parts are given, the default
    composed with those pretrained parts (``composed-{hash}``, the hash covering the parts'
    bytes, the layer count and the seed). It is written to a
    temporary sibling folder and renamed into place, so concurrent processes either win the
    rename or find the finished folder, never a partial one.
    """
    parts = (vision_model, encoder_lm, question_model, encoder_lm_layers)
    composing = any(part is not None for part in parts)
    if path is not None:
        if composing:
            raise ValueError(
                "a model path is a whole VMem checkpoint, while vision_model / encoder_lm / "
                "question_model compose one: give one or the other"
            )
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no checkpoint (config.json) in {folder}")
        return folder
    cache_dir = Path(cache_dir)
    if not composing and trained and bundle_available():
        return _materialise(cache_dir / f"trained-{bundle_digest()}", write_bundled_checkpoint)
    if not composing:
        target = cache_dir / f"tiny-seed{seed}-{default_config_hash()}"
        return _materialise(target, lambda tmp: build_default_model(seed).save_pretrained(tmp))

    def build(tmp: Path) -> None:
        with _BUILD_LOCK:
            model = compose_model(vision_model, encoder_lm, question_model, encoder_lm_layers, seed)
        model.save_pretrained(tmp)

    key = {
        "vision_model": vision_model and part_digest(vision_model),
        "encoder_lm": encoder_lm and part_digest(encoder_lm),
        "question_model": question_model and part_digest(question_model),
        "encoder_lm_layers": encoder_lm_layers,
        "seed": seed,
        "default": default_config_hash(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return _materialise(cache_dir / f"composed-{digest}", build)


def _materialise(target: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(folder)`` for ``target`` once, atomically (temporary sibling, then rename)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# the files of an HF model folder that decide what a part computes
_PART_FILES = (
    "config.json",
    "preprocessor_config.json",
    "*.safetensors",
    "*.bin",
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "*.model",
)


def part_digest(path: str | Path) -> str:
    """sha256 over the names and bytes of a part folder's config, weight and tokenizer files."""
    folder = Path(path)
    files = sorted({file for pattern in _PART_FILES for file in folder.glob(pattern)})
    digest = hashlib.sha256()
    for file in files:
        if file.is_file():
            digest.update(f"{file.name}:{_file_digest(file)};".encode())
    return digest.hexdigest()


def _file_digest(file: Path) -> str:
    stat = file.stat()  # big weights are hashed once per process while unchanged
    return _file_digest_cached(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_digest_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> VMemModel:
    """A saved VMem checkpoint, on ``device``, in eval mode."""
    model = VMemModel.from_pretrained(str(path))
    return model.to(device).eval()


def encoder_id(path: str | Path) -> str:
    """``<folder name>@<12 hex>``: sha256 over config.json and the safetensors weight files.

    Two folders holding the same bytes share the hash; any change of weights, config or
    question tokenizer (its subfolder's files, when there is one) changes it, so stored
    memories name exactly the encoder that produced them.
    """
    folder = Path(path)
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    if len(files) < 2 or not files[0].is_file():
        raise FileNotFoundError(f"no config.json + *.safetensors checkpoint in {folder}")
    tokenizer = json.loads(files[0].read_text()).get("question_tokenizer")
    if tokenizer:  # a pretrained question encoder's tokenizer is part of the encoder too
        files += sorted(f for f in (folder / tokenizer).rglob("*") if f.is_file())
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return f"{folder.name}@{digest.hexdigest()[:12]}"
