"""The per-clip label head and its loss: shapes, and that it learns a simple labelling."""

from __future__ import annotations

import pytest
import torch

from models.aux_heads import ClipLabelHead, clip_label_loss


def test_head_maps_memories_to_clip_logits():
    head = ClipLabelHead(memory_dim=8, n_labels=5)
    logits = head(torch.randn(2, 3, 4, 8))  # (B, N, M, D)
    assert logits.shape == (2, 3, 5)


def test_head_learns_labels_that_the_memory_holds():
    torch.manual_seed(0)
    memories = torch.randn(16, 3, 4, 8)
    labels = (memories.mean(dim=2)[..., :5] > 0).float()  # (16, 3, 5): readable from memory
    head = ClipLabelHead(memory_dim=8, n_labels=5)
    optim = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = clip_label_loss(head(memories), labels).item()
    for _ in range(200):
        loss = clip_label_loss(head(memories), labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.5 * first
    accuracy = ((head(memories) > 0).float() == labels).float().mean().item()
    assert accuracy > 0.9


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
