"""Training stage 1: the vision backbone learns what one frame shows.

The memory model can only remember what its frames' tokens tell apart. Learning shapes and
colours through the answer loss alone (backpropagated through the streaming encoder over a
whole video) is slow on CPU, while the world's ground truth labels every frame for free:
the object's colour, shape, size and place (a 5 x 5 grid of the frame) and the background.
The place keeps where objects are, so the memory can tell moving left from moving right.
A linear probe on the P pooled frame tokens is trained with the backbone on those labels;
the probe is then dropped and the backbone frozen, so stage 2 computes each training
frame's tokens once (``cache_tokens``) instead of at every step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from world.render import ingest_view, object_geometry
from world.scenes import BACKGROUNDS, COLOURS, SHAPES, SIZES, make_world

PLACE_BINS = 5  # the object's centre, binned across (x) and down (y) the frame
FRAME_LABELS = {  # what a frame shows -> its classes
    "colour": list(COLOURS),
    "shape": list(SHAPES),
    "size": list(SIZES),
    "background": list(BACKGROUNDS),
    "x": list(range(PLACE_BINS)),
    "y": list(range(PLACE_BINS)),
}


def place_bins(world, t: float) -> tuple[int, int]:
    """Grid cell (x, y) of the first object's centre at ``t``, PLACE_BINS per axis."""
    scene = world.scene_at(t)
    w, h = world.width, world.height
    cx, cy, _ = object_geometry(scene.objects[0], scene.progress(t), len(scene.objects), w, h)
    return tuple(min(PLACE_BINS - 1, max(0, int(v * PLACE_BINS))) for v in (cx / w, cy / h))


def frame_dataset(
    seeds: list[int], duration_s: float, image_size: int, per_world: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames at random times of the worlds of ``seeds`` and their labels:
    (N, S, S, 3) uint8 and (N, len(FRAME_LABELS)) int64 class indices (first object)."""
    frames, labels = [], []
    for seed in seeds:
        world, rng = make_world(seed, duration_s), np.random.default_rng(seed)
        for t in rng.uniform(0.0, duration_s, size=per_world):
            scene = world.scene_at(float(t))
            obj = scene.objects[0]
            values = (obj.colour, obj.shape, obj.size, scene.background, *place_bins(world, t))
            pairs = zip(FRAME_LABELS, values, strict=True)
            labels.append([FRAME_LABELS[k].index(v) for k, v in pairs])
            frames.append(ingest_view(world, float(t), image_size))
    return np.stack(frames), np.asarray(labels, dtype=np.int64)


class FrameProbe(nn.Module):
    """Linear heads over a frame's P pooled tokens: one set of logits per label."""

    def __init__(self, frame_tokens: int, hidden_size: int) -> None:
        super().__init__()
        self.sizes = [len(v) for v in FRAME_LABELS.values()]
        self.head = nn.Linear(frame_tokens * hidden_size, sum(self.sizes))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """(N, P, D) -> a (N, classes) logit tensor per label."""
        return list(self.head(tokens.flatten(1)).split(self.sizes, dim=1))


def pretrain_vision(
    vision: nn.Module,
    frames: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    log_every: int = 100,
) -> tuple[list[dict], FrameProbe]:
    """AdamW on the summed cross-entropy of every label: a log row per logged step, and the
    probe (for ``frame_accuracy``; it is not part of the model)."""
    probe = FrameProbe(vision.frame_tokens, vision.proj.out_features)
    params = [*vision.parameters(), *probe.parameters()]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=max(steps, 1))
    rng, history = np.random.default_rng(seed), []
    x, y = torch.from_numpy(frames), torch.from_numpy(labels)
    vision.train()
    for step in range(steps):
        pick = torch.from_numpy(rng.choice(len(x), size=min(batch, len(x)), replace=False))
        logits = probe(vision(x[pick]))
        loss = sum(F.cross_entropy(out, y[pick, i]) for i, out in enumerate(logits))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            history.append({"step": step, "vision_loss": round(loss.item(), 4)})
            print(history[-1], flush=True)
    vision.eval()
    return history, probe.eval()


@torch.no_grad()
def frame_accuracy(vision: nn.Module, probe: FrameProbe, frames, labels) -> dict[str, float]:
    """Held-out accuracy of the probe per label."""
    starts = range(0, len(frames), 256)
    chunks = [probe(vision(torch.from_numpy(frames[i : i + 256]))) for i in starts]
    logits = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
    return {
        f"frame_{name}": float((out.argmax(1).numpy() == labels[:, i]).mean())
        for i, (name, out) in enumerate(zip(FRAME_LABELS, logits, strict=True))
    }


def freeze(module: nn.Module) -> None:
    """No more gradients for ``module`` (stage 2 reads its cached outputs)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
