"""The VMem model: one Hugging Face checkpoint holding every trainable part.

Encoding is batched across videos: row b of a batch is clip t of video b together with that
video's carried memory, so many sequential videos share one forward pass.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from models.config import DEFAULT_PIXEL_STATS, VMemModelConfig
from models.question import QuestionEncoder
from models.select import VideoStageConditioner
from models.streaming import StreamingMemoryEncoder
from models.vision import VisionBackbone


class VMemModel(PreTrainedModel):
    """Vision backbone + streaming memory encoder + question encoder + conditioner."""

    config_class = VMemModelConfig
    base_model_prefix = "vmem"
    main_input_name = "frames"

    def __init__(self, config: VMemModelConfig) -> None:
        super().__init__(config)
        encoder_config = config.encoder()
        hidden = encoder_config.hidden_size  # D
        self.vision = VisionBackbone(
            config.vision(),
            config.frame_tokens,
            hidden,
            config.image_mean or DEFAULT_PIXEL_STATS,
            config.image_std or DEFAULT_PIXEL_STATS,
        )
        self.streaming = StreamingMemoryEncoder(
            encoder_config,
            memory_tokens=config.memory_tokens,
            clip_tokens=config.clip_frames * config.frame_tokens,
            indicator_dim=config.indicator_dim,
            init_std=config.initializer_range,
            per_token_indicators=config.per_token_indicators,
            frame_tokens=config.frame_tokens if config.motion_features else None,
        )
        pretrained_question = config.question_tokenizer is not None  # frozen, own tokenizer
        self.question_encoder = QuestionEncoder(
            config.question(), config.indicator_dim, pretrained=pretrained_question
        )
        self.conditioner = VideoStageConditioner(
            config.indicator_dim, hidden, config.conditioner_heads
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Generic init, then VMem's own parameters (learned memory, zero residual)."""
        super()._init_weights(module)
        init_own_weights = getattr(module, "init_own_weights", None)
        if callable(init_own_weights):
            init_own_weights()

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # HF skips parameter-less modules of custom-code models (our containers, such as the
        # conditioner whose zero residual must be re-applied); our inits are all guarded
        # (transformers.initialization), so loaded weights are never overwritten.
        super()._initialize_weights(module, is_custom_code=False)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> VMemModel:
        """HF loading, then tensors moved to freshly allocated (64-byte aligned) memory.

        The loader leaves CPU tensors 8-byte aligned, and CPU kernels then take other code
        paths (another summation order), so outputs would differ from the saved model's in
        the last bits; stored memories must not depend on how the weights were loaded.
        """
        model = super().from_pretrained(*args, **kwargs)
        with torch.no_grad():
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                    tensor.data = tensor.data.clone()
        subfolder = model.config.question_tokenizer
        if subfolder is not None:  # a pretrained question encoder reads its own tokenizer
            path = kwargs.get("pretrained_model_name_or_path", args[0] if args else None)
            tokenizer = AutoTokenizer.from_pretrained(str(path), subfolder=subfolder)
            model.question_encoder.set_tokenizer(tokenizer)
            model.question_encoder.freeze()  # loading made fresh parameters
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any):
        """HF saving, plus the question tokenizer (if any) in its subfolder of the checkpoint."""
        subfolder = self.config.question_tokenizer
        tokenizer = self.question_encoder.tokenizer
        if subfolder is not None and tokenizer is None:
            raise ValueError("the pretrained question encoder has no tokenizer to save")
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if subfolder is not None:
            tokenizer.save_pretrained(os.path.join(save_directory, subfolder))
        return out

    @property
    def memory_tokens(self) -> int:
        return self.config.memory_tokens  # M

    @property
    def hidden_size(self) -> int:
        return self.streaming.hidden_size  # D

    @property
    def indicator_dim(self) -> int:
        return self.config.indicator_dim  # Q

    @property
    def indicator_width(self) -> int:
        return self.config.indicator_width  # Q, or M*Q with per-token indicators

    @property
    def clip_frames(self) -> int:
        return self.config.clip_frames  # T

    @property
    def image_size(self) -> int:
        """Side the backbone reads; decoding frames at this size skips a resize."""
        return self.vision.image_size[0]

    def encode_clips(
        self,
        frames: torch.Tensor,
        prev_memory: torch.Tensor | None = None,
        reset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One clip per row: (B, T, H, W, 3) uint8 -> memory (B, M, D), indicator (B, Q) (or
        (B, M*Q) with ``per_token_indicators``).

        ``prev_memory`` None starts every row from the learned initial memory; ``reset``
        (B,) bool restarts only its True rows (a new video took over that slot of the batch).
        """
        if frames.ndim != 5 or frames.shape[1] != self.clip_frames:
            raise ValueError(
                f"frames must be (B, {self.clip_frames}, H, W, 3), got {tuple(frames.shape)}"
            )
        batch = frames.shape[0]
        tokens = self.vision(frames.flatten(0, 1))  # (B*T, P, D)
        tokens = tokens.reshape(batch, -1, tokens.shape[-1])  # (B, T*P, D)
        start = self.streaming.initial_memory(batch).to(tokens.dtype)  # (B, M, D)
        if prev_memory is None:
            prev_memory = start
        elif reset is not None:
            reset = reset.to(device=tokens.device, dtype=torch.bool).view(batch, 1, 1)
            prev_memory = torch.where(reset, start, prev_memory.to(tokens))
        return self.streaming(tokens, prev_memory.to(tokens))

    def encode_questions(self, questions: Sequence[str]) -> torch.Tensor:
        """Video-independent question embeddings for the archive stage: (B, Q) unit norm."""
        return self.question_encoder(questions)

    def condition_questions(
        self, questions: torch.Tensor, last_memory: torch.Tensor
    ) -> torch.Tensor:
        """Question embeddings conditioned on each video's last memory: (B, Q) unit norm."""
        return self.conditioner(questions, last_memory)

    def forward(
        self,
        frames: torch.Tensor,
        prev_memory: torch.Tensor | None = None,
        reset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode_clips`."""
        return self.encode_clips(frames, prev_memory, reset)


AutoConfig.register(VMemModelConfig.model_type, VMemModelConfig, exist_ok=True)
AutoModel.register(VMemModelConfig, VMemModel, exist_ok=True)
