"""Memory-propagated streaming encoding (VideoStreaming, step 1).

A small causal LM reads ``[memory(t-1), clip tokens(t), M summary queries]``; its outputs at
the summary positions are ``memory(t)``, which condense the video up to clip t. Because the
last M positions see everything before them (causal attention), the memory carries the past
forward clip by clip at a constant cost per clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as hf_init

from models.hf import base_model_from_config
from models.motion import FrameMotion


class StreamingMemoryEncoder(nn.Module):
    """(clip tokens, previous memory) -> (memory, clip indicator)."""

    def __init__(
        self,
        config: PreTrainedConfig,
        memory_tokens: int,
        clip_tokens: int,
        indicator_dim: int,
        init_std: float = 0.02,
        per_token_indicators: bool = False,
        frame_tokens: int | None = None,
    ) -> None:
        """``frame_tokens`` (P) adds ``FrameMotion`` features to the clip tokens; None: off."""
        super().__init__()
        self.lm = base_model_from_config(config)  # base causal LM, fed with inputs_embeds
        hidden = config.hidden_size
        self.memory_tokens = memory_tokens
        self.clip_tokens = clip_tokens
        self.init_std = init_std
        self.per_token_indicators = per_token_indicators
        self.start_memory = nn.Parameter(torch.empty(memory_tokens, hidden))  # (M, D)
        self.summary_queries = nn.Parameter(torch.empty(memory_tokens, hidden))  # (M, D)
        self.clip_positions = nn.Parameter(torch.empty(clip_tokens, hidden))  # (T*P, D)
        self.indicator_head = nn.Linear(hidden, indicator_dim)
        self.motion = FrameMotion(frame_tokens, hidden) if frame_tokens else None
        self.init_own_weights()

    @property
    def hidden_size(self) -> int:
        return self.start_memory.shape[-1]

    def init_own_weights(self) -> None:
        """Init of the parameters that are VMem's own (the LM initialises itself)."""
        for param in (self.start_memory, self.summary_queries, self.clip_positions):
            hf_init.normal_(param, std=self.init_std)
        hf_init.normal_(self.indicator_head.weight, std=self.init_std)
        hf_init.zeros_(self.indicator_head.bias)

    def initial_memory(self, batch: int) -> torch.Tensor:
        """The learned memory a video starts from: (B, M, D)."""
        return self.start_memory.unsqueeze(0).expand(batch, -1, -1)

    def forward(
        self, clip_tokens: torch.Tensor, prev_memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T*P, D), (B, M, D) -> memory (B, M, D), unit-norm indicator (B, Q); with
        ``per_token_indicators``, one unit indicator per memory token, flattened: (B, M*Q)."""
        batch, length, _ = clip_tokens.shape
        if length != self.clip_tokens:
            raise ValueError(f"expected {self.clip_tokens} clip tokens, got {length}")
        if prev_memory.shape != (batch, self.memory_tokens, self.hidden_size):
            raise ValueError(f"prev_memory must be (B, M, D), got {tuple(prev_memory.shape)}")
        queries = self.summary_queries.unsqueeze(0).expand(batch, -1, -1)  # (B, M, D)
        clip = clip_tokens + self.clip_positions  # (B, T*P, D)
        if self.motion is not None:
            clip = clip + self.motion(clip_tokens)
        sequence = torch.cat([prev_memory.to(clip.dtype), clip, queries], dim=1)  # (B, 2M+TP, D)
        hidden = self.lm(inputs_embeds=sequence, use_cache=False).last_hidden_state
        memory = hidden[:, -self.memory_tokens :]  # (B, M, D)
        return memory, self.indicators(memory)

    def indicators(self, memory: torch.Tensor) -> torch.Tensor:
        """A clip's indicator, read from its memory: (..., M, D) -> unit (..., Q), or with
        ``per_token_indicators`` one unit indicator per token, flattened (..., M*Q). The
        store keeps only the memory; the video stage reads the indicators back this way."""
        memory = memory.to(self.indicator_head.weight.dtype)
        if self.per_token_indicators:
            return F.normalize(self.indicator_head(memory), dim=-1).flatten(-2)  # (..., M*Q)
        return F.normalize(self.indicator_head(memory.mean(dim=-2)), dim=-1)  # (..., Q)
