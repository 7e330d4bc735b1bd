"""Ordering questions: how often the K selected clips hold both named objects, and how
often the answer is right, with the clips ranked by the whole question or shared between
the two alternatives it offers (``training.losses.selection_parts``), side by side.

    .venv/bin/python bench/ordering_selection.py CHECKPOINT [--worlds 40] [--minutes 0]

``--minutes 0`` uses the training durations on seeds 9000+, otherwise worlds of that
length on seeds 9100+ (as ``bench/heldout_check.py``); 6 questions per type per world.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from heldout_check import held_out_worlds, load_run, names_a_motion

from training.data import clip_ranges
from training.losses import encode_video_clips, question_inputs, select_memories, selection_parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--worlds", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, answerer, cfg = load_run(args.checkpoint)
    asked = []  # the ordering QAs, in the order of the examples' questions

    def keep(qa) -> bool:
        if qa.qtype == "ordering":
            asked.append(qa)
        return qa.qtype == "ordering"

    held = held_out_worlds(model, cfg, args.worlds, args.minutes, 6, keep=keep)
    rows = {"whole question": [], "shared": []}
    qas = iter(asked)
    with torch.no_grad():
        for ex in held:
            mine = [next(qas) for _ in ex.questions]
            memories, indicators = encode_video_clips(model, torch.from_numpy(ex.frames))
            n = len(mine)
            mem, ind = memories.expand(n, -1, -1, -1), indicators.expand(n, -1, -1)
            q_raw, pooled = question_inputs(model, ex.questions)
            ranges = clip_ranges(ex.duration_s, ex.n_clips, model.clip_frames, 1.0)
            queries = {
                "whole question": model.condition_questions(q_raw, mem[:, -1]),
                "shared": selection_parts(model, ex.questions, mem[:, -1]),
            }
            for name, query in queries.items():
                tokens, index, rel = select_memories(query, ind, mem, cfg["k"], training=False)
                answers = answerer.generate_answers(tokens, pooled, index, ex.questions, rel)
                for row, qa in enumerate(mine):
                    chosen = [c for c in index[row].tolist() if c >= 0]
                    both = all(
                        any(s < end and e > start for s, e in ranges[chosen])
                        for start, end in qa.evidence
                    )
                    right = answers[row] == " ".join(ex.answers[row])
                    rows[name].append((both, right, names_a_motion(qa.question)))

    def share(values: np.ndarray) -> float | None:
        return round(float(values.mean()), 3) if values.size else None

    report = {}
    for name, found in rows.items():
        both, right, motion = (np.array(col, dtype=bool) for col in zip(*found, strict=True))
        report[name] = {
            "questions": len(found),
            "both_selected": share(both),
            "right": share(right),
            "right_named_by_motion": share(right[motion]),
            "right_plain": share(right[~motion]),
            "right_when_both_selected": share(right[both]),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
