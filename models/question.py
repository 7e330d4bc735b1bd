"""Question encoder: text -> unit vector in the clip-indicator space (archive-stage search).

The default is a tiny BERT over UTF-8 bytes, so no tokenizer files are needed. The module
keeps one seam, ``forward(texts) -> (B, Q)``, so a frozen sentence encoder plus projection
can replace it later without touching callers.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """list of questions -> (B, Q) unit vectors: text model, masked mean pool, projection."""

    def __init__(self, config: PreTrainedConfig, indicator_dim: int) -> None:
        super().__init__()
        if config.vocab_size < ByteTokenizer.vocab_size:
            raise ValueError(f"question vocab must hold 259 byte ids, got {config.vocab_size}")
        self.model = base_model_from_config(config)
        self.tokenizer = ByteTokenizer(max_length=config.max_position_embeddings)
        self.proj = nn.Linear(config.hidden_size, indicator_dim)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """B questions -> (B, Q)."""
        device = self.proj.weight.device
        batch = {k: v.to(device) for k, v in self.tokenizer(list(texts)).items()}
        hidden = self.model(**batch).last_hidden_state  # (B, L, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H)
        return F.normalize(self.proj(pooled), dim=-1)  # (B, Q)
