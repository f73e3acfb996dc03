"""From hit counts to the dominant-neuron mask M (PiLoRA section 3.3, Algorithm 1 line 14).

The paper says only that dominant neurons are those "consistently engaged" according to the hit counts, and reports
two alternatives (a top half, Table 4; a cumulative-importance threshold, Fig. 6). The three rules here:

* ``consistent``: neuron i is dominant when it scored above its matrix's mean in more than half of the probes
  (``H_i > probes / 2``): "consistently above average" read as "in most probes";
* ``top_half``: the ``floor(m / 2)`` neurons with the most hits (ties: larger accumulated score, then lower index);
* ``cumulative``: neurons sorted by accumulated score; the shortest prefix holding ``threshold`` of the total.
"""

from __future__ import annotations

import torch

from .importance import HitCounter


def _ranking(counter: HitCounter) -> torch.Tensor:
    """Neuron indices from most to least important: hits, then accumulated score, then lower index first."""
    order = torch.argsort(counter.total, descending=True, stable=True)  # ties in total keep the lower index first
    return order[torch.argsort(counter.hits[order], descending=True, stable=True)]


def dominant_mask(counter: HitCounter, rule: str, threshold: float = 0.7) -> torch.Tensor:
    """The boolean mask M over output neurons (True: dominant group, rank r; False: supplementary, rank r').

    Args:
        counter: The hit counts of one weight after stage 1 (at least one probe).
        rule: "consistent", "top_half" or "cumulative" (see the module docstring).
        threshold: Share of the accumulated importance for "cumulative", in (0, 1].
    """
    if counter.probes == 0:
        raise ValueError("no probe was recorded: stage 1 must score the neurons at least once.")
    size = counter.hits.numel()
    mask = torch.zeros(size, dtype=torch.bool, device=counter.hits.device)
    if rule == "consistent":
        return counter.hits * 2 > counter.probes
    if rule == "top_half":
        mask[_ranking(counter)[: size // 2]] = True
        return mask
    if rule == "cumulative":
        order = torch.argsort(counter.total, descending=True, stable=True)
        share = torch.cumsum(counter.total[order], 0) / counter.total.sum().clamp_min(torch.finfo(torch.float64).tiny)
        # The first position whose cumulative share reaches the threshold is included.
        count = int(torch.searchsorted(share, torch.tensor(threshold, dtype=share.dtype, device=share.device))) + 1
        mask[order[: min(count, size)]] = True
        return mask
    raise ValueError(f"unknown partition rule {rule!r}")
