"""Question encoder: text -> unit vector in the clip-indicator space (archive-stage search).

The default is a tiny BERT over UTF-8 bytes, so no tokenizer files are needed. A pretrained
sentence encoder (e.g. all-MiniLM-L6-v2) plugs in behind the same seam,
``forward(texts) -> (B, Q)``: frozen, read with its own tokenizer, then projected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig

from models.hf import base_model_from_config


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255, plus PAD=256, CLS=257, SEP=258."""

    pad_id = 256
    cls_id = 257
    sep_id = 258
    vocab_size = 259

    def __init__(self, max_length: int = 128) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must leave room for CLS and SEP, got {max_length}")
        self.max_length = max_length

    def encode(self, text: str) -> list[int]:
        """[CLS] bytes [SEP], bytes truncated so the whole fits max_length."""
        body = list(text.encode("utf-8"))[: self.max_length - 2]
        return [self.cls_id, *body, self.sep_id]

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the longest text: input_ids and attention_mask, both (B, L) int64."""
        rows = [self.encode(t) for t in texts]
        length = max((len(r) for r in rows), default=2)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class QuestionEncoder(nn.Module):
    """list of questions -> (B, Q) unit vectors: text model, masked mean pool, projection.

    ``pretrained=False``: a small trainable BERT over bytes (ByteTokenizer). ``pretrained=True``:
    a frozen HF sentence encoder read with its own tokenizer (``set_tokenizer``), so only the
    projection into the indicator space trains.
    """

    def __init__(self, config: PreTrainedConfig, indicator_dim: int, pretrained: bool = False):
        super().__init__()
        if not pretrained and config.vocab_size < ByteTokenizer.vocab_size:
            raise ValueError(f"question vocab must hold 259 byte ids, got {config.vocab_size}")
        self.pretrained = pretrained
        self.max_length = config.max_position_embeddings
        self.tokenizer: Any = None if pretrained else ByteTokenizer(max_length=self.max_length)
        self.model = base_model_from_config(config)
        self.proj = nn.Linear(config.hidden_size, indicator_dim)
        if pretrained:
            self.freeze()

    def freeze(self) -> None:
        """Keep a pretrained text model as it is: only the projection trains."""
        self.model.requires_grad_(False)

    def set_tokenizer(self, tokenizer: Any) -> None:
        """The HF tokenizer of a pretrained encoder (loaded from the checkpoint's subfolder)."""
        if not self.pretrained:
            raise ValueError("the byte-level question encoder has its own tokenizer")
        self.tokenizer = tokenizer

    def train(self, mode: bool = True) -> QuestionEncoder:
        """A frozen pretrained encoder stays in eval mode (no dropout) while the rest trains."""
        super().train(mode)
        if self.pretrained:
            self.model.eval()
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask, both (B, L) int64, padded to the longest text."""
        if isinstance(self.tokenizer, ByteTokenizer):
            return self.tokenizer(list(texts))
        if self.tokenizer is None:
            raise RuntimeError(
                "pretrained question encoder has no tokenizer: load the checkpoint with "
                "VMemModel.from_pretrained (it reads the tokenizer subfolder) or set_tokenizer"
            )
        max_length = min(self.max_length, self.tokenizer.model_max_length)
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """B questions -> (B, H): the text model's masked mean pool, before the projection."""
        device = self.proj.weight.device
        batch = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        hidden = self.model(**batch).last_hidden_state  # (B, L, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """B questions -> (B, Q)."""
        pooled = self.embed(texts)  # (B, H)
        return F.normalize(self.proj(pooled.to(self.proj.weight.dtype)), dim=-1)  # (B, Q)
