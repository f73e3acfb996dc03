"""Neuron importance from LoRA gradients (PiLoRA Eqs. 7-8) and its accumulation into hit counts (Algorithm 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def approximate_weight_gradient(
    lora_a: torch.Tensor, lora_b: torch.Tensor, grad_a: torch.Tensor, grad_b: torch.Tensor
) -> torch.Tensor:
    """``G~ = B @ G_A + G_B @ A`` (Eq. 7): the weight-space gradient a LoRA step applies, to first order.

    Shapes (torch layout, W is out x in): ``A`` (r, in), ``B`` (out, r), ``G_A`` like ``A``, ``G_B`` like ``B``.
    """
    return lora_b.float() @ grad_a.float() + grad_b.float() @ lora_a.float()


def neuron_scores(approx_grad: torch.Tensor) -> torch.Tensor:
    """``S_i = sum_j |G~_ij|`` (Eq. 8 summed over row i): the importance of each output neuron."""
    return approx_grad.abs().sum(dim=1)


class HitCounter:
    """Hit counts ``H`` of one weight's output neurons over the probes of stage 1 (Algorithm 1, lines 9-12).

    Besides ``hits`` (how often a neuron scored above the matrix's mean) it keeps ``total`` (the summed scores), which
    the "cumulative" partition rule and tie-breaking use, and ``probes`` (how many times it was updated).
    """

    def __init__(self, out_features: int, device: torch.device | str | None = None) -> None:
        self.hits = torch.zeros(out_features, dtype=torch.int64, device=device)
        self.total = torch.zeros(out_features, dtype=torch.float64, device=device)
        self.probes = 0

    @torch.no_grad()
    def update(self, scores: torch.Tensor) -> None:
        """Count a hit for every neuron whose score exceeds the mean score of this matrix at this probe."""
        if scores.shape != self.hits.shape:
            raise ValueError(f"expected {tuple(self.hits.shape)} scores, got {tuple(scores.shape)}")
        self.hits += (scores > scores.mean()).to(torch.int64)
        self.total += scores.to(torch.float64)
        self.probes += 1

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"hits": self.hits, "total": self.total, "probes": self.probes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.hits = state["hits"].to(self.hits)
        self.total = state["total"].to(self.total)
        self.probes = int(state["probes"])
