from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.select import VideoStageConditioner, gumbel_topk, shared_topk, topk_select


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
    assert torch.equal(weights.detach(), F.one_hot(indices, 6).float())
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
