"""Greedy localization against brute force on small matrices."""

from __future__ import annotations

import itertools

import pytest
import torch

from losia_factory.core import block_score, select_block, select_subnet, subnet_size


def brute_best(score: torch.Tensor, n_out: int, n_in: int) -> float:
    """Exact maximum of Eq. 7 over every (output set, input set) pair."""
    best = -1.0
    for outs in itertools.combinations(range(score.shape[0]), n_out):
        rows = score[list(outs)]
        for ins in itertools.combinations(range(score.shape[1]), n_in):
            best = max(best, rows[:, list(ins)].sum().item())
    return best


def brute_topk_sum(values: torch.Tensor, k: int) -> float:
    return max(sum(values[list(c)].tolist()) for c in itertools.combinations(range(values.numel()), k))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape,p", [((6, 5), 0.5), ((5, 7), 0.4), ((4, 4), 0.75), ((7, 3), 1 / 3)])
def test_greedy_strategies_against_brute_force(seed, shape, p):
    score = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) ** 3
    n_out, n_in = subnet_size(shape[0], p), subnet_size(shape[1], p)
    optimum = brute_best(score, n_out, n_in)
    results = {s: select_subnet(score, p, s) for s in ("input_first", "output_first", "best")}
    totals = {s: block_score(score, *r) for s, r in results.items()}
    for strategy, (out_idx, in_idx) in results.items():
        assert out_idx.dtype == torch.long and in_idx.dtype == torch.long
        assert out_idx.numel() == n_out and in_idx.numel() == n_in
        assert torch.equal(out_idx, torch.sort(out_idx).values) and torch.equal(in_idx, torch.sort(in_idx).values)
        assert totals[strategy] <= optimum + 1e-6
    assert totals["best"] == max(totals["input_first"], totals["output_first"])
    # Exact top-k semantics of each greedy stage.
    out_idx, in_idx = results["input_first"]
    assert score.sum(0)[in_idx].sum().item() == pytest.approx(brute_topk_sum(score.sum(0), n_in))
    assert score[:, in_idx].sum(1)[out_idx].sum().item() == pytest.approx(
        brute_topk_sum(score[:, in_idx].sum(1), n_out)
    )
    out_idx, in_idx = results["output_first"]
    assert score.sum(1)[out_idx].sum().item() == pytest.approx(brute_topk_sum(score.sum(1), n_out))
    assert score[out_idx].sum(0)[in_idx].sum().item() == pytest.approx(brute_topk_sum(score[out_idx].sum(0), n_in))


def test_best_beats_a_single_greedy_order():
    # Input-first takes input 0 (largest column sum) and is stuck with a weak block; output-first finds the strong one.
    score = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.1, 0.0, 0.0]])
    in_first = select_block(score, 1, 1, "input_first")
    out_first = select_block(score, 1, 1, "output_first")
    assert block_score(score, *in_first) == 5.0 and block_score(score, *out_first) == 9.0
    assert block_score(score, *select_block(score, 1, 1, "best")) == 9.0


def test_ties_break_toward_lower_indices():
    score = torch.ones(6, 6)
    out_idx, in_idx = select_subnet(score, 0.5, "best")
    assert out_idx.tolist() == [0, 1, 2] and in_idx.tolist() == [0, 1, 2]
    score = torch.tensor([[1.0, 2.0, 2.0, 2.0, 1.0]])
    assert select_block(score, 1, 2, "input_first")[1].tolist() == [1, 2]


@pytest.mark.parametrize(
    "features,p,expected",
    [(64, 0.125, 8), (7, 0.125, 1), (10, 1.0, 10), (3, 0.34, 1), (100, 0.29, 28), (11008, 0.125, 1376)],
)
def test_subnet_size_is_floor_with_minimum_one(features, p, expected):
    assert subnet_size(features, p) == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        select_subnet(torch.rand(4, 4), 0.5, "random")
    with pytest.raises(ValueError, match="rank_factor"):
        select_subnet(torch.rand(4, 4), 0.0)
    with pytest.raises(ValueError, match="2-D"):
        select_block(torch.rand(4), 1, 1)
