"""Greedy core-subnet localization (paper section 3.2, Eq. 7, Algorithm 1).

Scores use torch's layout ``(out_features, in_features)``: entry ``[o, i]`` is the connection from input neuron
``i`` to output neuron ``o``. The paper's matrix is the transpose; its ROW2COLUMN is ``input_first`` here.
"""

from __future__ import annotations

import math

import torch

from .config import STRATEGIES


def subnet_size(features: int, factor: float) -> int:
    """Number of neurons kept out of ``features`` for a factor in (0, 1]: ``max(1, floor(factor * features))``."""
    return max(1, min(features, math.floor(factor * features)))


def top_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries of a 1-D tensor, sorted ascending.

    Ties are broken toward the lower index, so the result does not depend on the backend's top-k kernel.
    """
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return torch.sort(order).values


def select_block(score: torch.Tensor, num_out: int, num_in: int, strategy: str = "best") -> tuple[torch.Tensor, ...]:
    """Pick ``num_out`` output and ``num_in`` input neurons with a large total score.

    Args:
        score: Non-negative importance of shape ``(out_features, in_features)``.
        num_out: Output neurons to keep.
        num_in: Input neurons to keep.
        strategy: ``"input_first"`` fixes the inputs with the largest score sums, then the outputs with the largest
            sums over those inputs; ``"output_first"`` is the mirror; ``"best"`` keeps the block with the larger
            total score (``input_first`` on a tie).

    Returns:
        ``(out_idx, in_idx)``: int64 tensors sorted ascending.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if score.dim() != 2:
        raise ValueError(f"score must be 2-D (out_features, in_features), got shape {tuple(score.shape)}.")
    n_out, n_in = score.shape
    if not (1 <= num_out <= n_out and 1 <= num_in <= n_in):
        raise ValueError(f"block {num_out}x{num_in} does not fit a score of shape {n_out}x{n_in}.")
    score = score.float()

    def input_first() -> tuple[torch.Tensor, torch.Tensor]:
        in_idx = top_indices(score.sum(dim=0), num_in)
        out_idx = top_indices(score.index_select(1, in_idx).sum(dim=1), num_out)
        return out_idx, in_idx

    def output_first() -> tuple[torch.Tensor, torch.Tensor]:
        out_idx = top_indices(score.sum(dim=1), num_out)
        in_idx = top_indices(score.index_select(0, out_idx).sum(dim=0), num_in)
        return out_idx, in_idx

    if strategy == "input_first":
        return input_first()
    if strategy == "output_first":
        return output_first()
    a, b = input_first(), output_first()
    total_a = block_score(score, *a)
    total_b = block_score(score, *b)
    return b if total_b > total_a else a


def block_score(score: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor) -> float:
    """Total score of a block (Eq. 7)."""
    return float(score.index_select(0, out_idx).index_select(1, in_idx).sum())


def select_subnet(score: torch.Tensor, rank_factor: float, strategy: str = "best") -> tuple[torch.Tensor, ...]:
    """Localize the core subnet of one weight from its importance ``score`` (torch layout ``(out, in)``).

    Keeps ``max(1, floor(p*out))`` output and ``max(1, floor(p*in))`` input neurons with the greedy ``strategy``
    (see :func:`select_block`). Returns ``(out_idx, in_idx)``, int64 tensors sorted ascending.
    """
    if not 0.0 < rank_factor <= 1.0:
        raise ValueError(f"rank_factor must be in (0, 1], got {rank_factor!r}.")
    n_out, n_in = score.shape
    return select_block(score, subnet_size(n_out, rank_factor), subnet_size(n_in, rank_factor), strategy)
