"""Training stage 1a: the frame-motion module learns what moved between two frames.

Each training frame's tokens beside their change since its pair frame (``models.motion``)
are labelled with the object's motion in the world's ground truth (``frame_motions``); the
module's MLP and a linear probe learn them on the cached frame tokens (a few seconds of
CPU), then the MLP is frozen and the probe dropped. The streaming encoder then reads each
frame's motion instead of having to find it in the tokens' small frame-to-frame changes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.motion import FrameMotion, frame_pairs
from training.data import VideoExample
from world.scenes import MOTIONS


def motion_pairs(
    motion: FrameMotion, examples: list[VideoExample], per_world: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``per_world`` labelled frames per example (cached tokens): the module's inputs
    (n, 2*P*D) and their motion indices (n,)."""
    rng, inputs, labels = np.random.default_rng(seed), [], []
    for ex in examples:
        pairs = frame_pairs(torch.from_numpy(ex.tokens), motion.frame_tokens).flatten(0, 1)
        valid = np.flatnonzero(ex.motions.reshape(-1) >= 0)
        pick = rng.choice(valid, size=min(per_world, len(valid)), replace=False)
        inputs.append(pairs[torch.from_numpy(pick)])
        labels.append(torch.from_numpy(ex.motions.reshape(-1)[pick]))
    return torch.cat(inputs), torch.cat(labels)


def pretrain_motion(
    motion: FrameMotion,
    examples: list[VideoExample],
    *,
    steps: int,
    per_world: int = 32,
    batch: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    log_every: int = 250,
) -> tuple[list[dict], nn.Linear]:
    """AdamW on the motion cross-entropy of the module's MLP and a probe; the MLP is then
    frozen. Returns the loss log and the probe (for ``motion_accuracy``)."""
    inputs, labels = motion_pairs(motion, examples, per_world, seed)
    probe = nn.Linear(motion.inject.in_features, len(MOTIONS))
    params = [*motion.encoder.parameters(), *probe.parameters()]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    generator, log = torch.Generator().manual_seed(seed), []
    for step in range(steps):
        pick = torch.randint(len(labels), (min(batch, len(labels)),), generator=generator)
        loss = F.cross_entropy(probe(motion.encoder(inputs[pick])), labels[pick])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if step % log_every == 0 or step == steps - 1:
            log.append({"step": step, "motion_loss": round(loss.item(), 5)})
            print(log[-1])
    for param in motion.encoder.parameters():
        param.requires_grad_(False)
    return log, probe.eval()


@torch.no_grad()
def motion_accuracy(motion: FrameMotion, probe: nn.Linear, examples: list[VideoExample]) -> float:
    """Held-out accuracy of the probe on every labelled frame of ``examples``."""
    inputs, labels = motion_pairs(motion, examples, per_world=1 << 30)
    return float((probe(motion.encoder(inputs)).argmax(1) == labels).float().mean())
