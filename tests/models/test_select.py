"""Selection at inference (models.select): a question's queries, their conditioning and
scores, the K clips picked; and the TopK / Gumbel-TopK primitives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints.registry import build_default_model
from models.select import (
    VideoStageConditioner,
    archive_key_width,
    archive_keys,
    archive_queries,
    clip_scores,
    condition_parts,
    encode_parts,
    gumbel_topk,
    offered_alternatives,
    part_scores,
    part_texts,
    question_inputs,
    select_clips,
    selection_parts,
    selection_queries,
    selection_scores,
    shared_topk,
    topk_select,
)


def test_topk_returns_best_in_temporal_order():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.7], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert topk_select(scores, 3).tolist() == [[1, 3, 4], [0, 1, 2]]


def test_topk_pads_with_minus_one_when_short():
    scores = torch.tensor([[0.5, 0.1]])
    assert topk_select(scores, 4).tolist() == [[0, 1, -1, -1]]
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    scores = torch.tensor([[0.0, 9.0, 1.0, 8.0], [1.0, 2.0, 3.0, 4.0]])
    assert topk_select(scores, 3, mask).tolist() == [[0, 2, -1], [-1, -1, -1]]


def test_gumbel_topk_hard_forward_and_gradient():
    torch.manual_seed(0)
    scores = torch.randn(2, 6, requires_grad=True)
    indices, weights = gumbel_topk(scores, 3, tau=0.5)
    assert indices.shape == (2, 3) and weights.shape == (2, 3, 6)
    assert (indices.diff(dim=1) > 0).all()  # temporal order
    # straight-through: one-hot forward up to rounding (1 + soft - soft need not be exactly 1)
    torch.testing.assert_close(weights.detach(), F.one_hot(indices, 6).float())
    values = torch.randn(2, 6, 4)
    (weights @ values).square().sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_gumbel_topk_respects_mask_and_generator():
    scores = torch.zeros(1, 5)
    mask = torch.tensor([[True, False, True, True, False]])
    gen = torch.Generator().manual_seed(3)
    indices, _ = gumbel_topk(scores, 3, mask=mask, generator=gen)
    assert indices.tolist() == [[0, 2, 3]]
    with pytest.raises(ValueError):
        gumbel_topk(scores, 4, mask=mask)


def test_conditioner_is_identity_at_init_then_learns():
    torch.manual_seed(0)
    cond = VideoStageConditioner(indicator_dim=16, hidden_size=32, heads=2)
    q = F.normalize(torch.randn(3, 16), dim=-1)
    memory = torch.randn(3, 5, 32)
    torch.testing.assert_close(cond(q, memory), q)
    torch.nn.init.normal_(cond.out.weight, std=0.5)
    out = cond(q, memory)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(out, q)


def test_shared_topk_takes_turns_between_rankings():
    # ranking 0 prefers clips 0, 1, 2; ranking 1 prefers clips 5, 0, 4
    scores = torch.tensor([[[9.0, 8.0, 7.0, 0.0, 1.0, 2.0], [8.0, 0.0, 0.0, 0.0, 7.0, 9.0]]])
    assert shared_topk(scores, 2).tolist() == [[0, 5]]  # each ranking's best
    assert shared_topk(scores, 3).tolist() == [[0, 1, 5]]  # 1 is 0's second; 1's second taken
    assert shared_topk(scores, 4).tolist() == [[0, 1, 4, 5]]
    assert topk_select(scores[:, 0], 4).tolist() == [[0, 1, 2, 5]]  # one ranking: 0's best 4


def test_shared_topk_with_one_ranking_or_repeated_rankings_is_topk():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 1, 7, generator=gen)
    assert torch.equal(shared_topk(scores, 3), topk_select(scores[:, 0], 3))
    assert torch.equal(shared_topk(scores.expand(-1, 2, -1), 3), topk_select(scores[:, 0], 3))


def test_shared_topk_skips_masked_clips_and_pads():
    scores = torch.tensor([[[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]])
    mask = torch.tensor([[True, False, True]])
    assert shared_topk(scores, 4, mask).tolist() == [[0, 2, -1, -1]]


def test_offered_alternatives_are_the_two_phrases():
    ask = offered_alternatives
    assert ask("Which came first, the cyan square moving right or the orange diamond growing?") == [
        "cyan square moving right",
        "orange diamond growing",
    ]
    assert ask("Which was shown before the other: a Red Star or an orange circle?") == [
        "red star",
        "orange circle",
    ]
    assert ask("How many times does a green square appear?") == []
    assert ask("The red circle or the red circle?") == []  # not two distinct ones


def test_selection_queries_are_the_alternatives_else_the_question():
    question = "When does a red circle move left?"
    assert selection_queries(question) == [question]
    assert selection_queries("Which came first, the blue star or the red circle?") == [
        "blue star",
        "red circle",
    ]


def test_clip_scores_take_each_clip_s_best_fitting_token():
    """A clip holding a token that fits the question whole outscores one whose tokens each
    fit half of it, though the second clip's mean fits better: what per-token scoring is for."""
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0, 0.0]]), dim=-1)
    whole = torch.tensor([[0.7071, 0.7071, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    halves = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]])
    indicators = torch.stack([whole, halves]).flatten(1).unsqueeze(0)  # (B=1, N=2, G*Q=12)
    scores = clip_scores(q, indicators)
    assert scores.shape == (1, 2) and scores[0, 0] > 0.99 > 0.71 > scores[0, 1]
    assert (q @ whole.mean(0)) < (q @ halves.mean(0))  # the mean ranks them the other way
    single = torch.nn.functional.normalize(torch.randn(1, 5, 4), dim=-1)  # G = 1: cosine
    torch.testing.assert_close(clip_scores(q, single), torch.einsum("bq,bnq->bn", q, single))


def test_selection_parts_rank_by_each_offered_alternative():
    model = build_default_model(seed=0).eval()
    questions = ["Which came first, the red circle or the blue square?", "How many red circles?"]
    last = torch.randn(2, model.memory_tokens, model.hidden_size)
    with torch.no_grad():
        parts = selection_parts(model, questions, last)
        alone = selection_parts(model, ["red circle", "blue square", questions[1]], last[[0, 0, 1]])
    assert parts.shape == (2, 2, model.indicator_dim)
    torch.testing.assert_close(parts[0], alone[:2, 0])  # each alternative's own query
    torch.testing.assert_close(parts[1, 0], alone[2, 0])
    torch.testing.assert_close(parts[1, 1], parts[1, 0])  # one part, repeated


def test_part_texts_pad_with_the_first_query():
    questions = ["Which came first, the blue star or the red circle?", "When does a cat jump?"]
    assert part_texts(questions) == [["blue star", "red circle"], [questions[1]] * 2]
    assert part_texts(questions[1:]) == [[questions[1]]]
    assert part_texts(questions[1:], 3) == [[questions[1]] * 3]


@pytest.fixture(scope="module")
def per_token_model():
    return build_default_model(seed=2, per_token_indicators=True)


def test_question_inputs_are_unit_and_reuse_a_given_pooled_text(model):
    texts = ["a red circle", "When does a blue star move up?"]
    with torch.no_grad():
        unit, pooled = question_inputs(model, texts)
        again, same = question_inputs(model, texts, pooled)
    assert unit.shape == (2, model.indicator_dim) and pooled.shape[0] == 2
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(again, unit)
    assert same is pooled  # the cached pooled text is passed through
    torch.testing.assert_close(unit, model.encode_questions(texts))  # the archive query


def test_encode_parts_embed_each_selection_query(model):
    questions = ["Which came first, the blue star or the red circle?", "How many cats?"]
    with torch.no_grad():
        parts = encode_parts(model, questions)
        each, _ = question_inputs(model, ["blue star", "red circle", "How many cats?"])
    assert parts.shape == (2, 2, model.indicator_dim)
    torch.testing.assert_close(parts[0], each[:2])
    torch.testing.assert_close(parts[1], each[2:].expand(2, -1))  # one query, repeated


def test_condition_parts_condition_each_part_on_its_own_video(model):
    gen = torch.Generator().manual_seed(0)
    parts = F.normalize(torch.randn(2, 3, model.indicator_dim, generator=gen), dim=-1)
    last = torch.randn(2, model.memory_tokens, model.hidden_size, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(condition_parts(model, parts, last), parts)  # identity at init
        trained = build_default_model(seed=0)
        torch.nn.init.normal_(trained.conditioner.out.weight, std=0.5)
        out = condition_parts(trained, parts, last)
        for b in range(2):
            one = trained.condition_questions(parts[b], last[b : b + 1].expand(3, -1, -1))
            torch.testing.assert_close(out[b], one)
    assert not torch.allclose(out, parts)


def test_archive_keys_rank_clips_as_the_question_repeated_per_token(per_token_model):
    """cosine(query, key) is exactly the cosine of the question repeated M times to the M
    token indicators side by side: the archive stage ranks as it always did."""
    rng = np.random.default_rng(0)
    q_dim, m = per_token_model.indicator_dim, per_token_model.memory_tokens
    tokens = rng.standard_normal((50, m, q_dim))
    indicators = (tokens / np.linalg.norm(tokens, axis=-1, keepdims=True)).reshape(50, -1)
    questions = rng.standard_normal((3, q_dim))
    questions /= np.linalg.norm(questions, axis=-1, keepdims=True)
    keys, queries = archive_keys(indicators, q_dim), archive_queries(questions)
    assert keys.shape == (50, archive_key_width(q_dim)) and keys.shape[1] % 16 == 0
    np.testing.assert_allclose(np.linalg.norm(keys, axis=1), 1.0, atol=1e-5)
    cosine = (queries @ keys.T) / np.linalg.norm(queries, axis=1, keepdims=True)
    tiled = np.tile(questions, (1, m))
    repeated = (tiled @ indicators.T) / (
        np.linalg.norm(tiled, axis=1, keepdims=True) * np.linalg.norm(indicators, axis=1)
    )
    np.testing.assert_allclose(cosine, repeated, atol=1e-5)


def test_archive_keys_of_one_indicator_are_the_indicator(model):
    rng = np.random.default_rng(1)
    indicators = rng.standard_normal((4, model.indicator_dim))
    indicators /= np.linalg.norm(indicators, axis=1, keepdims=True)
    keys = archive_keys(indicators, model.indicator_dim)
    np.testing.assert_allclose(keys[:, : model.indicator_dim], indicators, atol=1e-6)
    np.testing.assert_allclose(keys[:, model.indicator_dim :], 0.0, atol=1e-3)


def test_part_scores_are_each_part_s_clip_scores():
    gen = torch.Generator().manual_seed(0)
    parts = F.normalize(torch.randn(2, 3, 4, generator=gen), dim=-1)  # (B, A, Q)
    indicators = F.normalize(torch.randn(2, 5, 8, generator=gen), dim=-1)  # G = 2
    scores = part_scores(parts, indicators)
    assert scores.shape == (2, 3, 5)
    for a in range(3):
        torch.testing.assert_close(scores[:, a], clip_scores(parts[:, a], indicators))


def _clips(n: int, q: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(1, n, q, generator=gen), dim=-1)  # (B=1, N, Q)


def test_select_clips_picks_the_best_k_in_time_order_with_their_fit():
    indicators = _clips(7)
    question = F.normalize(indicators[:, 5] + indicators[:, 1], dim=-1)  # (1, Q)
    index, fit = select_clips(question, indicators, 3)
    cosine = clip_scores(question, indicators)[0]
    best = cosine.topk(3).indices.sort().values
    assert index.tolist() == [best.tolist()] and {1, 5} <= set(best.tolist())
    torch.testing.assert_close(fit[0], cosine[best])
    same, _ = select_clips(question[:, None], indicators, 3)  # (B, Q) or (B, A=1, Q)
    assert torch.equal(same, index)


def test_select_clips_pads_a_short_video_with_minus_one():
    indicators = _clips(2)
    index, fit = select_clips(indicators[:, 1], indicators, 4)
    assert index.tolist() == [[0, 1, -1, -1]]
    assert fit[0, 1].item() == pytest.approx(1.0) and fit[0, 2:].eq(0).all()


def test_select_clips_shares_k_between_the_alternatives():
    """Two parts take turns: each gets its best clips, where one query alone would take
    only clips near its own."""
    eye = torch.eye(6)
    rows = [eye[0], 0.9 * eye[0] + 0.1 * eye[1], 0.8 * eye[0] + 0.2 * eye[2], eye[3], eye[4]]
    indicators = F.normalize(torch.stack(rows), dim=-1)[None]  # (1, N=5, 6)
    parts = torch.stack([eye[0], eye[4]])[None]  # (1, A=2, 6)
    alone, _ = select_clips(parts[:, 0], indicators, 2)
    assert alone.tolist() == [[0, 1]]
    shared, fit = select_clips(parts, indicators, 2)
    assert shared.tolist() == [[0, 4]]  # each alternative's best, in time order
    best = part_scores(parts, indicators)[0].amax(dim=0)  # each clip's best-fitting part
    torch.testing.assert_close(fit[0], best[[0, 4]])
    four, _ = select_clips(parts, indicators, 4)
    assert four.tolist() == [[0, 1, 2, 4]]  # part 1's second best (3) loses to part 0's turns


def test_select_clips_ranks_by_selection_scores():
    """``bias`` (after scaling by ``temperature``) can force a clip in; the fit stays its
    cosine."""
    indicators = _clips(5, seed=1)
    question = indicators[:, 2]
    bias = torch.zeros(1, 5)
    bias[0, 4] = 1e3
    cosine, scores = selection_scores(question, indicators, 0.1, bias)
    torch.testing.assert_close(scores, cosine / 0.1 + bias[:, None])
    index, fit = select_clips(question, indicators, 2, temperature=0.1, bias=bias)
    assert index.tolist() == [[2, 4]]
    torch.testing.assert_close(fit[0], cosine[0, 0, [2, 4]])


def test_selection_parts_then_select_clips_is_the_question_s_selection(model):
    """The whole inference path on an untrained model: queries of each question, conditioned
    on its video, pick K clips of that video."""
    questions = ["Which came first, the red circle or the blue square?", "How many stars?"]
    gen = torch.Generator().manual_seed(3)
    last = torch.randn(2, model.memory_tokens, model.hidden_size, generator=gen)
    indicators = F.normalize(torch.randn(2, 6, model.indicator_dim, generator=gen), dim=-1)
    with torch.no_grad():
        parts = selection_parts(model, questions, last)
        index, _ = select_clips(parts, indicators, 3)
        expected = shared_topk(part_scores(parts, indicators), 3)
    assert torch.equal(index, expected)
    assert (index.diff(dim=1) > 0).all()
