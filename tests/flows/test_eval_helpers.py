from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from flows.eval import iou, overlaps, score
from flows.eval_report import grid_matrix, write_grid
from flows.world_questions import QA
from schemas.records import SelectedClip


def _clip(t0: float, t1: float, s: float = 0.0) -> SelectedClip:
    return SelectedClip("v", "/v.mp4", int(t0 // 16), t0, t1, s)


def test_iou_and_overlap():
    assert iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert iou((0, 1), (2, 3)) == 0.0
    assert overlaps(_clip(16, 32), [(30, 40)]) and not overlaps(_clip(16, 32), [(32, 40)])


def test_score_counts_recall_per_type_and_grounding_of_the_best_clip():
    loc = QA("when?", "16-32", "localisation", [(16.0, 32.0)], 64.0)
    hist = QA("before?", "red", "history", [(40.0, 48.0)], 64.0)
    zero = QA("how many?", "0", "counting", [], 64.0)
    result = score(
        [
            (loc, [_clip(0, 16, 0.1), _clip(16, 32, 0.9)]),
            (hist, [_clip(0, 16)]),
            (zero, [_clip(0, 16)]),
        ]
    )
    assert result["recall_by_type"] == {"history": 0.0, "localisation": 1.0}
    assert result["recall_at_k"] == 0.5 and result["questions"] == 2
    assert result["grounding_iou"] == 1.0
    assert math.isnan(score([])["recall_at_k"])


def test_grid_files(tmp_path):
    grid = [
        {"minutes": 1.0, "depth": 0.0, "recall": 1.0},
        {"minutes": 1.0, "depth": 1.0, "recall": 0.0},
        {"minutes": 5.0, "depth": 0.0, "recall": 1.0},
    ]
    lengths, depths, matrix = grid_matrix(grid)
    assert lengths == [1.0, 5.0] and depths == [0.0, 1.0] and np.isnan(matrix[1, 1])
    files = write_grid(grid, tmp_path)
    png = open(files["png"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (2 * 32, 2 * 32)  # (depths, lengths) cells
    assert open(files["csv"]).read().splitlines()[0] == "minutes,depth,recall"
