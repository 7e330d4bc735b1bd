"""Held-out answer accuracy and recall of a trained checkpoint on rendered worlds, plus a
memory probe: how much of each auxiliary label group a fresh head can read from the frozen
memories (what the memory holds, whatever the answerer makes of it).

    .venv/bin/python -m evaluation.heldout_check CHECKPOINT [--worlds 40] [--minutes 0] [--probe]
        [--oracle] [--reset] [--per-type N]

``--minutes 0`` uses the training durations (1-4 minutes) on seeds 9000+, otherwise worlds
of that length on seeds 9100+. Frames are rendered as ingest sees them (no codec), so this
is faster than ``vmem eval`` and isolates the model from the pipeline.

``--history-split N`` asks every history question of N held-out worlds and splits their
accuracy by how many seconds of the earlier scene lie in the clip where the named scene
starts (0: only the carried memory holds it), with memory propagation, with ablation (a)
(the memory reset at every clip) and with the evidence clips forced in.

``named_by_motion`` splits each type's accuracy by whether its question names an object by
its motion ("the magenta diamond shrinking": its colour and shape recur in the world).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from models.answer import ANSWERER_DIR, MemoryAnswerer
from models.vmem import VMemModel
from training.data import LABEL_GROUPS, build_examples
from training.heads import ClipLabelHead, SceneStackHead, clip_label_loss
from training.heldout import evaluate
from training.losses import encode_video_clips
from world.questions import MOTION_PHRASES, earlier_scene_seconds_in_clip

GROUP_NAMES = ("now", "before", "after", "seen", "motion")


@torch.no_grad()
def frozen_memories(model, examples) -> torch.Tensor:
    """Every clip's memory, clips of all examples in a row: (sum N, M, D)."""
    return torch.cat([encode_video_clips(model, torch.from_numpy(e.frames))[0] for e in examples])


def fit_probe(head, memories, labels, groups=(), steps: int = 1500):
    """Adam on random batches of 256 clips; returns the head."""
    optim = torch.optim.Adam(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        pick = torch.randint(len(memories), (256,), generator=gen)
        loss = clip_label_loss(head(memories[pick]), labels[pick], groups)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return head


def memory_probe(
    model, train, held, memories, steps: int = 1500, tokens: bool = True
) -> dict[str, dict[str, float]]:
    """F1 per label group of a fresh ClipLabelHead trained on frozen memories (``memories``:
    {"train", "held"} -> ``frozen_memories``), reading the memory tokens side by side, or
    their mean with ``tokens`` False."""
    sets = {
        name: (memories[name], torch.from_numpy(np.concatenate([e.labels for e in exs])))
        for name, exs in (("train", train), ("held", held))
    }
    width = model.memory_tokens if tokens else 0
    head = ClipLabelHead(
        model.hidden_size, sets["train"][1].shape[1], groups=LABEL_GROUPS, memory_tokens=width
    )
    fit_probe(head, *sets["train"], LABEL_GROUPS, steps)
    out = {}
    with torch.no_grad():
        for name, (mem, labels) in sets.items():
            pred = (head(mem) > 0).float()
            groups = list(LABEL_GROUPS)
            parts = zip(pred.split(groups, -1), labels.split(groups, -1), strict=True)
            out[name] = {
                g: round((2 * (p * t).sum() / (p.sum() + t.sum()).clamp_min(1)).item(), 3)
                for g, (p, t) in zip(GROUP_NAMES, parts, strict=True)
            }
    return out


def stack_probe(
    model, train, held, memories, depth: int = 4, steps: int = 1500
) -> dict[str, list[float]]:
    """F1 per stack place (0: the latest scene) of a fresh SceneStackHead on frozen memories
    (as in ``memory_probe``): how well token j holds the j-th latest scene, in one code
    shared by the tokens."""
    sets = {
        name: (
            memories[name],
            torch.from_numpy(np.concatenate([e.stack[:, :depth] for e in exs])),
        )
        for name, exs in (("train", train), ("held", held))
    }
    head = fit_probe(
        SceneStackHead(model.hidden_size, sets["train"][1].shape[-1], depth),
        *sets["train"],
        steps=steps,
    )
    out = {}
    with torch.no_grad():
        for name, (mem, labels) in sets.items():
            pred = (head(mem) > 0).float()
            hits, sizes = (pred * labels).sum(dim=(0, 2)), (pred + labels).sum(dim=(0, 2))
            out[name] = [round(v, 3) for v in (2 * hits / sizes.clamp_min(1)).tolist()]
    return out


def load_run(checkpoint: str) -> tuple[VMemModel, MemoryAnswerer, dict]:
    """A training run's model, answerer and training config, in eval mode."""
    model = VMemModel.from_pretrained(checkpoint).eval()
    answerer = MemoryAnswerer.from_pretrained(f"{checkpoint}/{ANSWERER_DIR}").eval()
    return model, answerer, json.load(open(f"{checkpoint}/train_config.json"))


def example_shape(model, cfg: dict, per_type: int = 0) -> tuple[int, int, int]:
    """(clip frames, image size, questions per type) of the run's examples; 0: the run's."""
    return model.clip_frames, model.image_size, per_type or cfg["per_type"]


def held_out_worlds(
    model, cfg: dict, worlds: int, minutes: float, per_type: int = 0, keep=None
) -> list:
    """Rendered held-out examples: ``minutes`` 0 gives the training durations on seeds 9000+,
    otherwise worlds of that length on seeds 9100+; ``per_type`` 0: the run's; ``keep``:
    only the questions it accepts."""
    if minutes:
        seeds, durations = range(9100, 9100 + worlds), (minutes * 60.0,)
    else:
        seeds, durations = range(9000, 9000 + worlds), tuple(cfg["durations"])
    shape = example_shape(model, cfg, per_type)
    return build_examples(list(seeds), durations, *shape, keep=keep)


def names_a_motion(question: str) -> bool:
    """Whether the question names an object by its motion ("the red star shrinking")."""
    return any(phrase in question for pair in MOTION_PHRASES.values() for phrase in pair)


def motion_named_split(rows: list) -> dict:
    """Accuracy per question type (localisation always names motions: left out), split by
    whether an object is named by its motion: {type: {"motion": [acc, n], "plain": ...}}."""
    out: dict = {}
    for qtype, question, got, want in rows:
        if qtype != "localisation":
            key = "motion" if names_a_motion(question) else "plain"
            out.setdefault(qtype, {}).setdefault(key, []).append(got == want)
    return {
        t: {k: [round(float(np.mean(v)), 3), len(v)] for k, v in sorted(split.items())}
        for t, split in sorted(out.items())
    }


SECOND_BINS = ((0, 0, "0"), (1, 3, "1-3"), (4, 7, "4-7"), (8, 10**9, "8+"))


def history_split(model, answerer, cfg: dict, worlds: int, minutes: float) -> dict:
    """History accuracy per bin of seconds of the earlier scene inside the named scene's
    first clip: with propagation, with the memory reset at every clip, with the evidence
    clips forced in; every history question of ``worlds`` held-out worlds."""
    clip_seconds = model.clip_frames  # clips of clip_frames frames at 1 fps
    seconds: list[float] = []

    def keep(qa) -> bool:
        if qa.qtype != "history":
            return False
        starts = np.arange(0.0, qa.video_seconds, clip_seconds)
        seconds.append(earlier_scene_seconds_in_clip(qa, starts))
        return True

    # every history question of each world
    held = held_out_worlds(model, cfg, worlds, minutes, per_type=10**6, keep=keep)
    runs = {
        "propagation": {},
        "reset_every_clip": {"reset_every_clip": True},
        "oracle": {"oracle": True},
    }
    right = {}
    for name, options in runs.items():
        rows: list = []
        evaluate(model, answerer, held, cfg["k"], record=rows, **options)
        right[name] = np.array([got == want for _, _, got, want in rows])
    out = {}
    for lo, hi, label in SECOND_BINS:
        pick = np.array([lo <= s <= hi for s in seconds])
        out[label] = {"questions": int(pick.sum())}
        out[label].update(
            {
                name: round(float(r[pick].mean()), 3) if pick.any() else None
                for name, r in right.items()
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--worlds", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--probe-mean", action="store_true", help="probe the token mean")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--oracle", action="store_true", help="also answer with the evidence clips forced in"
    )
    parser.add_argument(
        "--reset", action="store_true", help="also answer with the memory reset at every clip (a)"
    )
    parser.add_argument(
        "--whole-question", action="store_true",
        help="also answer with every question's clips ranked by the whole question",
    )  # fmt: skip
    parser.add_argument(
        "--per-type", type=int, default=0, help="questions per type per world (0: the checkpoint's)"
    )
    parser.add_argument(
        "--history-split", type=int, default=0, metavar="N",
        help="history accuracy of N worlds by the earlier scene's seconds in the named clip",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, answerer, cfg = load_run(args.checkpoint)
    held = held_out_worlds(model, cfg, args.worlds, args.minutes, args.per_type)
    rows: list = []
    report = {"held_out": evaluate(model, answerer, held, cfg["k"], record=rows)}
    report["named_by_motion"] = motion_named_split(rows)
    if args.oracle:
        report["held_out_oracle"] = evaluate(model, answerer, held, cfg["k"], oracle=True)
    if args.whole_question:
        report["held_out_whole_question"] = evaluate(
            model, answerer, held, cfg["k"], split_offered=False
        )
    if args.reset:
        report["held_out_reset"] = evaluate(model, answerer, held, cfg["k"], reset_every_clip=True)
    if args.probe:
        train = build_examples(
            cfg["train_seeds"][:200],
            tuple(cfg["durations"]),
            *example_shape(model, cfg, args.per_type),
        )
        memories = {"train": frozen_memories(model, train), "held": frozen_memories(model, held)}
        report["memory_probe_f1"] = memory_probe(
            model, train, held, memories, tokens=not args.probe_mean
        )
        report["stack_probe_f1"] = stack_probe(model, train, held, memories)
    if args.history_split:
        report["history_by_earlier_scene_seconds_in_clip"] = history_split(
            model, answerer, cfg, args.history_split, args.minutes
        )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
