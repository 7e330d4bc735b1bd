"""Frame motion: what changed between a frame and the one before it, as a token feature.

The frozen frame tokens place the object finely enough that a linear probe on a pair of
consecutive frames' tokens tells its motion (left/right/up/down/still/grow/shrink) at 0.99
held out, yet a streaming encoder reading the tokens one frame after another never learned
it (probe F1 0.10): the change between two frames is a fifth of the tokens' scale and the
answer loss does not ask for it often enough. This module hands it over explicitly: an MLP
reads each frame's tokens beside their change since the previous frame of the clip (frame 0
pairs with frame 1) and gives a motion embedding per frame, trained on motion labels
(``training.motion``) and then frozen; a trainable projection adds it to the frame's P
tokens. It works within one clip, so ingest needs no state beyond the carried memory.
"""

from __future__ import annotations

import torch
from torch import nn


def pair_frame(t: int) -> int:
    """The frame of its clip that frame ``t`` is compared with: the previous one (frame 0:
    frame 1, whose change it borrows). ``frame_pairs`` and the motion labels both follow it."""
    return t - 1 if t > 0 else 1


def frame_pairs(clip_tokens: torch.Tensor, frame_tokens: int) -> torch.Tensor:
    """(..., T*P, D) -> (..., T, 2*P*D): each frame's tokens and their change since its
    ``pair_frame`` (frame 0: frame 1's change since frame 0)."""
    frames = clip_tokens.unflatten(-2, (-1, frame_tokens)).flatten(-2)  # (..., T, P*D)
    if frames.shape[-2] < 2:
        return torch.cat([frames, torch.zeros_like(frames)], dim=-1)
    change = frames[..., 1:, :] - frames[..., :-1, :]  # (..., T-1, P*D): frame t+1 vs t
    change = torch.cat([change[..., :1, :], change], dim=-2)  # frame 0 borrows frame 1's
    return torch.cat([frames, change], dim=-1)


class FrameMotion(nn.Module):
    """(B, T*P, D) clip tokens -> (B, T*P, D) motion features to add to them."""

    def __init__(self, frame_tokens: int, hidden_size: int) -> None:
        super().__init__()
        self.frame_tokens = frame_tokens
        width = 2 * frame_tokens * hidden_size
        self.encoder = nn.Sequential(  # trained on motion labels, then frozen
            nn.LayerNorm(width),
            nn.Linear(width, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.inject = nn.Linear(hidden_size, hidden_size)  # trains with the streaming encoder

    def embed(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        """(..., T*P, D) -> (..., T, D): one motion embedding per frame."""
        return self.encoder(frame_pairs(clip_tokens, self.frame_tokens))

    def forward(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        per_frame = self.inject(self.embed(clip_tokens))  # (B, T, D)
        return per_frame.repeat_interleave(self.frame_tokens, dim=-2)  # (B, T*P, D)
