from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from evaluation.grid import grid_matrix, write_grid
from evaluation.scoring import expected_answer, iou, overlaps, parse_range, score
from schemas.records import SelectedClip
from world.questions import QA


def _clip(t0: float, t1: float, s: float = 0.0) -> SelectedClip:
    return SelectedClip("v", "/v.mp4", int(t0 // 16), t0, t1, s)


def test_iou_and_overlap():
    assert iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert iou((0, 1), (2, 3)) == pytest.approx(0.0)
    assert overlaps(_clip(16, 32), [(30, 40)]) and not overlaps(_clip(16, 32), [(32, 40)])


def test_score_counts_recall_per_type_and_grounding_of_the_best_clip():
    loc = QA("when?", "16-32", "localisation", [(16.0, 32.0)], 64.0)
    hist = QA("before?", "red", "history", [(40.0, 48.0)], 64.0)
    zero = QA("how many?", "0", "counting", [], 64.0)
    result = score(
        [
            (loc, [_clip(0, 16, 0.1), _clip(16, 32, 0.9)], None, SPANS),
            (hist, [_clip(0, 16)], None, SPANS),
            (zero, [_clip(0, 16)], None, SPANS),
        ]
    )
    assert result["recall_by_type"] == pytest.approx({"history": 0.0, "localisation": 1.0})
    assert result["recall_at_k"] == pytest.approx(0.5) and result["questions"] == 2
    assert result["grounding_iou"] == pytest.approx(1.0)
    assert "answer_accuracy" not in result  # nothing was answered
    assert math.isnan(score([])["recall_at_k"])


SPANS = {0: (0.0, 16.0), 1: (16.0, 32.0), 2: (32.0, 48.0), 3: (48.0, 64.0)}


def test_expected_answer_widens_localisation_to_clips():
    loc = QA("when?", "20-37", "localisation", [(20.0, 37.0)], 64.0)
    assert expected_answer(loc, SPANS) == "16-48"
    hist = QA("before?", "red", "history", [(40.0, 48.0)], 64.0)
    assert expected_answer(hist, SPANS) == "red"


def test_score_answer_accuracy_per_type_and_answer_iou():
    loc = QA("when?", "20-37", "localisation", [(20.0, 37.0)], 64.0)
    hist = QA("before?", "red", "history", [(40.0, 48.0)], 64.0)
    count = QA("how many?", "2", "counting", [(0.0, 4.0), (50.0, 54.0)], 64.0)
    clips = [_clip(16, 32)]
    result = score(
        [
            (loc, clips, "16-48", SPANS),  # right at clip granularity
            (loc, clips, "0-16", SPANS),  # wrong range
            (hist, clips, "blue", SPANS),
            (count, clips, "2", SPANS),
        ]
    )
    assert result["answer_accuracy"] == pytest.approx(
        {"counting": 1.0, "history": 0.0, "localisation": 0.5}
    )
    assert result["answer_accuracy_all"] == pytest.approx(0.5)
    assert result["answer_iou"] == pytest.approx((17 / 32 + 0.0) / 2)


def test_score_splits_history_by_whether_only_the_memory_holds_the_earlier_scene():
    memory_only = QA("before?", "red", "history", [(24.0, 32.0), (32.0, 40.0)], 64.0)
    in_clip = QA("before?", "blue", "history", [(20.0, 30.0), (30.0, 40.0)], 64.0)
    clips = [_clip(16, 32)]
    result = score(
        [
            (memory_only, clips, "red", SPANS),
            (memory_only, clips, "green", SPANS),
            (in_clip, clips, "green", SPANS),
        ]
    )
    split = result["history_by_clip"]
    assert {part: v["questions"] for part, v in split.items()} == {"memory_only": 2, "in_clip": 1}
    accuracy = {part: v["accuracy"] for part, v in split.items()}
    assert accuracy == pytest.approx({"memory_only": 0.5, "in_clip": 0.0})
    assert result["answer_accuracy"]["history"] == pytest.approx(1 / 3)


def test_parse_range():
    assert parse_range("16-48") == (16.0, 48.0)
    assert parse_range("red") is None and parse_range(None) is None
    assert parse_range("48-16") is None


def test_grid_files(tmp_path):
    grid = [
        {"minutes": 1.0, "depth": 0.0, "recall": 1.0, "videos": 2},
        {"minutes": 1.0, "depth": 1.0, "recall": 0.5, "videos": 2},
        {"minutes": 5.0, "depth": 0.0, "recall": 1.0, "videos": 2},
    ]
    lengths, depths, matrix = grid_matrix(grid)
    assert lengths == [1.0, 5.0] and depths == [0.0, 1.0] and np.isnan(matrix[1, 1])
    assert matrix[0, 1] == pytest.approx(0.5)
    files = write_grid(grid, tmp_path)
    png = open(files["png"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (2 * 32, 2 * 32)  # (depths, lengths) cells
    assert open(files["csv"]).read().splitlines()[0] == "minutes,depth,recall,videos"
