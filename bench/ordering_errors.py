"""What the ordering answers of a checkpoint are, on rendered held-out worlds: right, the
other of the two named objects, a mixed name (the colour of one and the shape of the
other), or something else; side by side with free decoding and with the answer chosen
among the two offered names (``AnswererConfig.answer_offered_choices``).

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
from heldout_check import held_out_worlds, load_run

from training.heldout import evaluate
from world.scenes import COLOURS, SHAPES

NAME = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def kind_of(answer: str, want: str, question: str) -> str:
    """right / other object / mixed name / other, against the two names in ``question``."""
    if answer == want:
        return "right"
    names, words = NAME.findall(question), tuple(answer.split())
    if words in names:
        return "other object"
    if len(words) == 2 and set(words) <= {w for name in names for w in name}:
        return "mixed name"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--worlds", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--per-type", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, answerer, cfg = load_run(args.checkpoint)
    held = held_out_worlds(model, cfg, args.worlds, args.minutes, args.per_type)
    report = {}
    for name, offered in (("free decoding", False), ("offered choices", True)):
        answerer.config.answer_offered_choices = offered
        rows: list[tuple[str, str, str, str]] = []
        evaluate(model, answerer, held, cfg["k"], record=rows)
        report[name] = dict(
            Counter(kind_of(got, want, q) for qtype, q, got, want in rows if qtype == "ordering")
        )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
