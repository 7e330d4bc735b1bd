"""Can a frame's motion be read from the frozen frame tokens of two consecutive frames?

    .venv/bin/python -m evaluation.motion_from_tokens [CHECKPOINT] [--train-worlds 60]

Frames one second apart (as ingest samples them) inside one scene of 4-minute worlds:
training worlds (seeds 1000+) fit a linear probe and a one-hidden-layer MLP on each pair's
tokens beside their change (``models.motion.frame_pairs``, standardised per feature), held
out worlds (seeds 9000+) score them. Without CHECKPOINT: the bundled trained default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from checkpoints.registry import load_model, resolve_checkpoint
from models.motion import frame_pairs
from schemas.config import ModelConfig
from world.render import ingest_view
from world.scenes import MOTIONS, make_world


def scene_pairs(seeds, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2, S, S, 3) frames at k and k+1 seconds of one scene, and the scene's motion."""
    frames, labels = [], []
    for seed in seeds:
        world = make_world(seed, 240.0)
        for scene in world.scenes:
            for k in range(int(np.ceil(scene.t_start)), int(scene.t_end) - 1):
                frames.append([ingest_view(world, float(t), size) for t in (k, k + 1)])
                labels.append(MOTIONS.index(scene.objects[0].motion))
    return np.asarray(frames), np.asarray(labels)


@torch.no_grad()
def pair_features(vision, frames: np.ndarray) -> torch.Tensor:
    """(n, 2, S, S, 3) -> (n, 2*P*D): the pair's tokens and their change."""
    flat = torch.from_numpy(frames.reshape(-1, *frames.shape[2:]))
    tokens = torch.cat([vision(flat[i : i + 256]) for i in range(0, len(flat), 256)])
    clips = tokens.reshape(len(frames), -1, tokens.shape[-1])  # (n, 2*P, D): a 2-frame clip
    return frame_pairs(clips, tokens.shape[1])[:, 1]  # frame 1 beside its change


def fit(x_train, y_train, x_test, y_test, hidden: int, steps: int = 1500) -> float:
    """Held-out accuracy of a probe (``hidden`` 0: linear) fit with AdamW."""
    torch.manual_seed(0)
    width = x_train.shape[1]
    net = (
        torch.nn.Linear(width, len(MOTIONS))
        if not hidden
        else torch.nn.Sequential(
            torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, len(MOTIONS))
        )
    )
    optim = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    for _ in range(steps):
        pick = torch.randint(len(y_train), (256,))
        loss = F.cross_entropy(net(x_train[pick]), y_train[pick])
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():
        return float((net(x_test).argmax(1) == y_test).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--train-worlds", type=int, default=60)
    parser.add_argument("--test-worlds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cache = Path(ModelConfig().cache_dir).expanduser()
    path = resolve_checkpoint(args.checkpoint, 0, cache, trained=True)
    vision = load_model(path).vision.eval()
    size = vision.image_size[0]
    train = scene_pairs(range(1000, 1000 + args.train_worlds), size)
    test = scene_pairs(range(9000, 9000 + args.test_worlds), size)
    x_train, x_test = pair_features(vision, train[0]), pair_features(vision, test[0])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = torch.from_numpy(train[1]), torch.from_numpy(test[1])
    report = {
        "pairs": [len(y_train), len(y_test)],
        "majority": round(float(np.bincount(test[1]).max() / len(y_test)), 3),
        "linear": round(fit(x_train, y_train, x_test, y_test, 0), 3),
        "mlp": round(fit(x_train, y_train, x_test, y_test, 256), 3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
