from __future__ import annotations

from evaluation.markdown import report_markdown

ACCURACY = {"localisation": 1.0, "history": 0.5, "counting": 0.75, "ordering": 1.0}


def _report() -> dict:
    """A `vmem eval --json` report cut down to what the tables read."""
    model = {
        "recall_at_k": 1.0,
        "grounding_iou": 0.35,
        "answer_iou": 0.37,
        "recall_by_type": {t: 1.0 for t in ACCURACY},
        "answer_accuracy": ACCURACY,
        "history_by_clip": {
            "memory_only": {"accuracy": 0.5, "questions": 4},
            "in_clip": {"accuracy": 1.0, "questions": 36},
        },
    }
    return {
        **model,
        "questions": 12,
        "bytes_per_video_hour": 583200,
        "answer_input_tokens": 32,
        "ablation_no_memory": {**model, "answer_accuracy": {"history": 0.25}},
        "needle_grid": [
            {"minutes": 1.0, "depth": 0.0, "recall": 1.0, "videos": 4},
            {"minutes": 1.0, "depth": 1.0, "recall": 0.5, "videos": 4},
            {"minutes": 60.0, "depth": 0.0, "recall": 1.0, "videos": 4},
        ],
    }


def test_variant_rows_name_each_figure_and_mark_missing_ones():
    lines = report_markdown(_report()).splitlines()
    model = next(line for line in lines if line.startswith("| selection + memory"))
    assert model.split(" | ")[1:4] == ["1.00", "0.35", "0.37"]  # recall, grounding, answer IoU
    assert model.endswith("| 1.00 | 0.50 | 0.75 | 1.00 |")  # answers in TYPES order
    reset = next(line for line in lines if line.startswith("| (a) memory propagation off"))
    assert reset.endswith("| - | 0.25 | - | - |")  # types the report lacks print as "-"
    assert not any(line.startswith("| (b)") for line in lines)  # no last-K ablation: no row


def test_history_split_and_needle_grid():
    text = report_markdown(_report())
    assert "| the model | 0.50 (4) | 1.00 (36) |" in text
    assert "583,200 bytes per video-hour" in text and "reads 32 memory tokens" in text
    assert "4 video(s) per cell" in text
    assert "| 1 min | 1.00 | 0.50 | 0.75 |" in text  # depths 0 % and 100 %, then the mean
    assert "| 60 min | 1.00 | - | 1.00 |" in text  # a cell the grid lacks
