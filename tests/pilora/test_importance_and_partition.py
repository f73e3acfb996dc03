"""Eqs. 7-8 against autograd and a hand-worked case; hit counting and the three partition rules."""

from __future__ import annotations

import pytest
import torch

from losia_factory.pilora import HitCounter, approximate_weight_gradient, dominant_mask, neuron_scores


def test_eq7_hand_worked_case():
    lora_a = torch.tensor([[1.0, 2.0]])  # r=1, in=2
    lora_b = torch.tensor([[1.0], [0.0], [3.0]])  # out=3
    grad_a = torch.tensor([[0.5, -1.0]])
    grad_b = torch.tensor([[2.0], [1.0], [-1.0]])
    # B G_A = [[.5,-1],[0,0],[1.5,-3]];  G_B A = [[2,4],[1,2],[-1,-2]]
    expected = torch.tensor([[2.5, 3.0], [1.0, 2.0], [0.5, -5.0]])
    approx = approximate_weight_gradient(lora_a, lora_b, grad_a, grad_b)
    assert torch.equal(approx, expected)
    assert torch.equal(neuron_scores(approx), torch.tensor([5.5, 3.0, 5.5]))


@pytest.mark.parametrize(("out_features", "in_features", "rank"), [(6, 5, 2), (4, 7, 3)])
def test_eq7_equals_the_lora_chain_rule_through_autograd(out_features, in_features, rank):
    """With y = W0 x + s B A x and G = dL/dW: G_A = s B^T G and G_B = s G A^T, so Eq. 7 = s (B B^T G + G A^T A)."""
    generator = torch.Generator().manual_seed(out_features)
    weight = torch.randn(out_features, in_features, generator=generator, requires_grad=True)
    lora_a = torch.randn(rank, in_features, generator=generator, requires_grad=True)
    lora_b = torch.randn(out_features, rank, generator=generator, requires_grad=True)
    x = torch.randn(9, in_features, generator=generator)
    target = torch.randn(9, out_features, generator=generator)
    scaling = 1.7
    loss = ((x @ (weight + scaling * lora_b @ lora_a).T - target) ** 2).mean()
    loss.backward()
    full = weight.grad
    approx = approximate_weight_gradient(lora_a.detach(), lora_b.detach(), lora_a.grad, lora_b.grad)
    a, b = lora_a.detach(), lora_b.detach()
    assert torch.allclose(approx, scaling * (b @ b.T @ full + full @ a.T @ a), atol=1e-5)


def test_hits_count_scores_above_the_matrix_mean():
    counter = HitCounter(4)
    counter.update(torch.tensor([1.0, 5.0, 3.0, 7.0]))  # mean 4
    counter.update(torch.tensor([4.0, 4.0, 4.0, 4.0]))  # nobody above the mean
    counter.update(torch.tensor([9.0, 0.0, 2.0, 1.0]))  # mean 3
    assert counter.hits.tolist() == [1, 1, 0, 1] and counter.probes == 3
    assert counter.total.tolist() == [14.0, 9.0, 9.0, 12.0]
    with pytest.raises(ValueError, match="expected"):
        counter.update(torch.ones(3))


def _counter(hits, total, probes):
    counter = HitCounter(len(hits))
    counter.hits = torch.tensor(hits)
    counter.total = torch.tensor(total, dtype=torch.float64)
    counter.probes = probes
    return counter


def test_consistent_rule_takes_neurons_hit_in_more_than_half_the_probes():
    counter = _counter([0, 2, 3, 4, 1, 2], [1.0] * 6, probes=4)
    assert dominant_mask(counter, "consistent").tolist() == [False, False, True, True, False, False]


def test_top_half_breaks_ties_by_accumulated_score_then_index():
    counter = _counter([3, 1, 3, 2, 3, 0, 1], [5.0, 9.0, 8.0, 1.0, 5.0, 0.0, 2.0], probes=3)
    # Three neurons (floor(7/2)) with 3 hits; then 2 hits -> the half is exactly the three with 3 hits.
    assert dominant_mask(counter, "top_half").nonzero().squeeze(1).tolist() == [0, 2, 4]
    counter = _counter([2, 2, 2, 2], [1.0, 3.0, 3.0, 2.0], probes=2)
    assert dominant_mask(counter, "top_half").nonzero().squeeze(1).tolist() == [1, 2]


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(0.5, [1]), (0.51, [1, 3]), (0.8, [1, 3]), (0.81, [0, 1, 3]), (1.0, [0, 1, 2, 3])],
)
def test_cumulative_rule_takes_the_fewest_neurons_holding_the_share(threshold, expected):
    counter = _counter([0, 0, 0, 0], [1.0, 5.0, 1.0, 3.0], probes=1)  # shares in order: .5, .8, .9, 1.0
    assert dominant_mask(counter, "cumulative", threshold).nonzero().squeeze(1).tolist() == expected


def test_partition_needs_a_probe_and_a_known_rule():
    with pytest.raises(ValueError, match="at least once"):
        dominant_mask(HitCounter(3), "consistent")
    with pytest.raises(ValueError, match="unknown partition rule"):
        dominant_mask(_counter([1], [1.0], 1), "median")
