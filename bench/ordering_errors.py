"""What the ordering answers of a checkpoint are, on rendered held-out worlds: right, the
other of the two named objects, a mixed name (the colour of one and the shape of the
other), or something else.

    .venv/bin/python bench/ordering_errors.py CHECKPOINT [--worlds 40] [--minutes 0]
        [--per-type 6]

``--minutes 0`` uses the training durations on seeds 9000+, otherwise worlds of that
length on seeds 9100+ (as ``bench/heldout_check.py``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter

import torch

from flows.train import question_inputs
from flows.train_data import build_examples
from flows.world import COLOURS, SHAPES
from models.answer import ANSWERER_DIR, MemoryAnswerer
from models.training import encode_video_clips, select_memories
from models.vmem import VMemModel

NAME = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def kind_of(answer: str, want: str, question: str) -> str:
    """right / other object / mixed name / other, against the two names in ``question``."""
    if answer == want:
        return "right"
    names = NAME.findall(question)
    if tuple(answer.split()) in names:
        return "other object"
    words = answer.split()
    if len(words) == 2 and {words[0], words[1]} <= {w for name in names for w in name}:
        return "mixed name"
    return "other"


@torch.no_grad()
def ordering_kinds(model, answerer, examples, k: int) -> Counter:
    """Counts of ``kind_of`` over the examples' ordering questions (TopK selection)."""
    kinds: Counter = Counter()
    for ex in examples:
        memories, indicators = encode_video_clips(model, torch.from_numpy(ex.frames))
        q_raw, pooled = question_inputs(model, ex.questions)
        n_q = len(ex.questions)
        mem, ind = memories.expand(n_q, -1, -1, -1), indicators.expand(n_q, -1, -1)
        q_cond = model.condition_questions(q_raw, mem[:, -1])
        tokens, index, relevance = select_memories(q_cond, ind, mem, k, training=False)
        answers = answerer.generate_answers(tokens, pooled, index, ex.questions, relevance)
        for qtype, question, got, want in zip(
            ex.qtypes, ex.questions, answers, ex.answers, strict=True
        ):
            if qtype == "ordering":
                kinds[kind_of(got, " ".join(want), question)] += 1
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--worlds", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--per-type", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = VMemModel.from_pretrained(args.checkpoint).eval()
    answerer = MemoryAnswerer.from_pretrained(f"{args.checkpoint}/{ANSWERER_DIR}").eval()
    cfg = json.load(open(f"{args.checkpoint}/train_config.json"))
    if args.minutes:
        seeds, durations = range(9100, 9100 + args.worlds), (args.minutes * 60.0,)
    else:
        seeds, durations = range(9000, 9000 + args.worlds), tuple(cfg["durations"])
    held = build_examples(
        list(seeds), durations, model.clip_frames, model.image_size, args.per_type
    )
    print(json.dumps(dict(ordering_kinds(model, answerer, held, cfg["k"])), indent=1))


if __name__ == "__main__":
    main()
