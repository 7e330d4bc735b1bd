"""The per-clip label head and its loss: shapes, and that it learns a simple labelling."""

from __future__ import annotations

import pytest
import torch

from training.heads import (
    ClipLabelHead,
    EvidencePlaceHead,
    SceneStackHead,
    clip_label_loss,
    evidence_place_loss,
)


def fit(head, memories, labels, steps: int, lr: float = 1e-2) -> float:
    """Adam on the whole set; the last loss."""
    optim = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = clip_label_loss(head(memories), labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return loss.item()


def test_head_maps_memories_to_clip_logits():
    head = ClipLabelHead(memory_dim=8, n_labels=5)
    logits = head(torch.randn(2, 3, 4, 8))  # (B, N, M, D)
    assert logits.shape == (2, 3, 5)


def test_head_learns_labels_that_the_memory_holds():
    torch.manual_seed(0)
    memories = torch.randn(16, 3, 4, 8)
    labels = (memories.mean(dim=2)[..., :5] > 0).float()  # (16, 3, 5): readable from memory
    head = ClipLabelHead(memory_dim=8, n_labels=5)
    first = clip_label_loss(head(memories), labels).item()
    assert fit(head, memories, labels, steps=200) < 0.5 * first
    accuracy = ((head(memories) > 0).float() == labels).float().mean().item()
    assert accuracy > 0.9


def test_token_head_reads_what_only_one_token_holds():
    """Side by side, the head reads a label held by one token that the token mean hides."""
    torch.manual_seed(0)

    def memories_and_labels(n):
        memories = torch.randn(n, 1, 4, 8)
        memories[..., 1, 0] = -memories[..., 0, 0]  # token 1 cancels token 0 in the mean
        return memories, (memories[..., 0, :1] > 0).float()  # (n, 1, 1): token 0's sign

    (train, train_labels), (held, held_labels) = memories_and_labels(512), memories_and_labels(512)

    def held_out_accuracy(head):
        fit(head, train, train_labels, steps=300)
        return ((head(held) > 0).float() == held_labels).float().mean().item()

    side_by_side = ClipLabelHead(memory_dim=8, n_labels=1, memory_tokens=4)
    assert side_by_side(held).shape == (512, 1, 1)
    assert held_out_accuracy(side_by_side) > 0.85
    assert held_out_accuracy(ClipLabelHead(memory_dim=8, n_labels=1)) < 0.7
    with pytest.raises(ValueError, match="expected 4 memory tokens"):
        side_by_side(torch.randn(2, 1, 3, 8))


def test_grouped_loss_adds_the_mean_of_each_group():
    logits, labels = torch.randn(2, 3, 6), (torch.rand(2, 3, 6) > 0.5).float()
    whole = clip_label_loss(logits, labels)
    grouped = clip_label_loss(logits, labels, (2, 4))
    parts = [
        clip_label_loss(logits[..., :2], labels[..., :2]),
        clip_label_loss(logits[..., 2:], labels[..., 2:]),
    ]
    assert torch.isclose(grouped, sum(parts)) and not torch.isclose(grouped, whole)
    assert ClipLabelHead(8, 6, groups=(2, 4)).groups == (2, 4)
    with pytest.raises(ValueError, match="do not add up"):
        ClipLabelHead(8, 6, groups=(2, 3))


def test_stack_head_reads_each_of_the_first_tokens_with_one_shared_code():
    torch.manual_seed(0)
    memories = torch.randn(256, 1, 4, 8)
    labels = (memories[..., :3, :2] > 0).float()  # (256, 1, 3, 2): the same code per token
    head = SceneStackHead(memory_dim=8, n_labels=2, depth=3)
    assert head(memories).shape == (256, 1, 3, 2)
    fit(head, memories, labels, steps=200)
    # one head for every place: token 3 (never trained on) is read in the same code
    unseen = (head(memories[..., 3:4, :].expand(-1, -1, 3, -1))[..., 0, :] > 0).float()
    assert (unseen == (memories[..., 3, :2] > 0).float()).float().mean() > 0.9
    with pytest.raises(ValueError, match="needs as many memory tokens"):
        head(torch.randn(2, 1, 2, 8))
    with pytest.raises(ValueError, match="depth must be"):
        SceneStackHead(8, 2, depth=0)


def test_evidence_place_head_reads_the_first_places_of_each_slot():
    head = EvidencePlaceHead(hidden=6, memory_tokens=4, depth=2)
    states = torch.randn(3, 2 * 4, 6)  # (B, K*M, H), K = 2
    logits = head(states)
    assert logits.shape == (3, 2, 2)
    expected = head.net(states.view(3, 2, 4, 6)[:, :, :2]).squeeze(-1)
    assert torch.allclose(logits, expected)
    with pytest.raises(ValueError, match="depth"):
        EvidencePlaceHead(hidden=6, memory_tokens=4, depth=5)


def test_evidence_place_loss_ignores_empty_slots():
    logits = torch.zeros(1, 2, 3)
    targets = torch.tensor([[[1.0, 0, 0], [1.0, 1.0, 1.0]]])
    only_first = evidence_place_loss(logits, targets, torch.tensor([[True, False]]))
    assert torch.isclose(only_first, torch.tensor(0.6931), atol=1e-4)  # BCE of logit 0
    logits[0, 1] = -5.0  # a wrong guess on the empty slot changes nothing
    assert torch.isclose(
        evidence_place_loss(logits, targets, torch.tensor([[True, False]])), only_first
    )
