"""Figure data from the recorded subnets alone (no weights): positions over time, selection frequency, coverage.

* Fig. 3 (:func:`positions`): which output and input neurons of one layer are in its block, subnet after subnet;
* Fig. 7 (:func:`frequencies`): how often each neuron is in the block, as the share of the run's optimizer steps it
  spent there, sorted per module type, with numbers saying how concentrated the choice is;
* coverage (:func:`trained_coverage`): the share of each weight's entries that were inside a block for at least one
  optimizer step, i.e. the entries LoSiA could have changed.

A subnet chosen at the very last step trains no step: it counts in Fig. 3 but not in frequencies or coverage.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .run import RunLog, Target, module_sort_key


def default_layer(run: RunLog) -> str:
    """The target shown in Fig. 3 when none is asked for: the first block-shaped one of the middle decoder layer."""
    layered = [t for t in run.targets.values() if t.layer is not None and t.num_in is not None]
    if not layered:
        return next(iter(run.targets))
    layers = sorted({t.layer for t in layered if t.layer is not None})
    middle = layers[len(layers) // 2]
    return next(t.name for t in layered if t.layer == middle)


def resolve_target(run: RunLog, name: str | None) -> Target:
    """The target called ``name`` (exactly, or the only one ending with it); the default layer for None."""
    if name is None:
        return run.targets[default_layer(run)]
    if name in run.targets:
        return run.targets[name]
    name = name.removesuffix(".weight")
    matches = [t for t in run.targets.values() if t.name == name or t.name.endswith("." + name)]
    if len(matches) != 1:
        hint = f"{len(matches)} match" if matches else "none matches"
        raise ValueError(
            f"--layer {name!r}: {hint}; give a trained layer's full name, e.g. {default_layer(run)!r} "
            f"(the run trained {len(run.targets)} layers)."
        )
    return matches[0]


def positions(target: Target) -> dict[str, Any]:
    """Fig. 3 data for one target: its subnets in order, with how much each keeps of the previous one.

    Returns:
        ``{"name", "shape", "steps": [step after which each subnet took over], "out_idx": [[...], ...],
        "in_idx": [[...], ...] or None, "retained_out"/"retained_in": [share of the previous subnet's neurons kept,
        one per reselection], "ever_out"/"ever_in": share of the neurons that were ever in the block}``.
    """
    outs = [p.out_idx for p in target.periods]
    ins = [p.in_idx for p in target.periods] if target.num_in is not None else None

    def retained(seq: list[np.ndarray]) -> list[float]:
        return [len(np.intersect1d(a, b)) / len(a) for a, b in itertools.pairwise(seq)]

    def ever(seq: list[np.ndarray], size: int) -> float:
        return len(np.unique(np.concatenate(seq))) / size

    return {
        "name": target.name,
        "shape": list(target.shape),
        "steps": [p.start for p in target.periods],
        "out_idx": [a.tolist() for a in outs],
        "in_idx": None if ins is None else [a.tolist() for a in ins if a is not None],
        "retained_out": retained(outs),
        "retained_in": None if ins is None else retained([a for a in ins if a is not None]),
        "ever_out": ever(outs, target.shape[0]),
        "ever_in": None if ins is None else ever([a for a in ins if a is not None], target.shape[1]),
    }


MAX_CURVE_POINTS = 512


def sorted_curve(freq: np.ndarray) -> list[float]:
    """A frequency vector sorted descending, as at most :data:`MAX_CURVE_POINTS` evenly spaced points, 6 digits.

    The figure plots it against the neuron's rank as a fraction, so a 7B layer's 11008 neurons need no more points;
    ``analysis.json`` of a 7B run stays a few MB instead of 60.
    """
    ordered = np.sort(freq)[::-1]
    if len(ordered) > MAX_CURVE_POINTS:
        ordered = ordered[np.linspace(0, len(ordered) - 1, MAX_CURVE_POINTS).round().astype(int)]
    return np.round(ordered, 6).tolist()


def neuron_frequency(target: Target, side: str) -> np.ndarray:
    """Share of the run's optimizer steps each output (``side="out"``) or input neuron spent in the block."""
    size = target.shape[0 if side == "out" else 1]
    counts = np.zeros(size, dtype=np.float64)
    total = 0
    for period in target.periods:
        total += period.steps
        idx = period.out_idx if side == "out" else period.in_idx
        if idx is None:
            counts += period.steps
        else:
            counts[idx] += period.steps
    return counts / total if total else counts


def concentration(freq: np.ndarray, kept: float, never_if_random: float | None = None) -> dict[str, float | None]:
    """How concentrated a frequency vector is, next to a uniform choice of the same size.

    Returns ``never`` (share of neurons never selected; about ``(1 - kept) ** periods`` for random subnets),
    ``always`` (share selected at every step), ``top10_share`` (share of all selection time held by the most
    frequent 10% of neurons; 0.1 when uniform), ``gini`` (0 uniform, toward 1 concentrated) and ``kept`` (the
    block's share of the neurons, the mean frequency) and ``never_if_random`` (the share of neurons that random
    subnets of the same sizes and number of periods would never have selected, given by the caller).
    """
    order = np.sort(freq)[::-1]
    total = order.sum()
    n = len(order)
    top = max(1, round(0.1 * n))
    ascending = order[::-1]
    gini = float((2 * np.arange(1, n + 1) - n - 1) @ ascending / (n * total)) if total else 0.0
    return {
        "kept": float(kept),
        "never": float((freq == 0).mean()),
        "always": float((freq >= 1.0 - 1e-12).mean()),
        "top10_share": float(order[:top].sum() / total) if total else 0.0,
        "gini": gini,
        "never_if_random": never_if_random,
    }


def frequencies(run: RunLog) -> dict[str, Any]:
    """Fig. 7 data: per module type and side (out/in), every layer's sorted frequencies and their concentration.

    Returns:
        ``{module: {side: {"layers": [names], "sorted": [curve per layer (:func:`sorted_curve`)], "summary": {...}}}}``
        with the summary of :func:`concentration` over all the module type's neurons pooled. Inputs of a block
        spanning all input neurons (the output layer) are left out: their frequency is 1 by construction.
    """
    result: dict[str, Any] = {}
    by_module: dict[str, list[Target]] = {}
    for target in run.targets.values():
        by_module.setdefault(target.module, []).append(target)
    for module in sorted(by_module, key=module_sort_key):
        members = by_module[module]
        entry: dict[str, Any] = {}
        for side in ("out", "in"):
            if side == "in" and members[0].num_in is None:
                continue
            freqs = [neuron_frequency(t, side) for t in members]
            kept = np.mean(
                [(t.num_out if side == "out" else t.num_in or 0) / t.shape[0 if side == "out" else 1] for t in members]
            )
            entry[side] = {
                "layers": [t.name for t in members],
                "sorted": [sorted_curve(f) for f in freqs],
                "summary": concentration(np.concatenate(freqs), float(kept), _never_if_random(members, side)),
            }
        result[module] = entry
    return result


def _never_if_random(members: list[Target], side: str) -> float:
    """Expected share of never-selected neurons under uniformly random subnets: prod over periods of (1 - k / n)."""
    shares = []
    for target in members:
        size = target.shape[0 if side == "out" else 1]
        kept = (target.num_out if side == "out" else target.num_in or size) / size
        shares.append((1.0 - kept) ** sum(1 for p in target.periods if p.steps > 0))
    return float(np.mean(shares))


def trained_mask(target: Target) -> np.ndarray:
    """Boolean ``(out, in)`` mask of the entries inside the block during at least one optimizer step."""
    mask = np.zeros(target.shape, dtype=bool)
    for period in target.periods:
        if period.steps == 0:
            continue
        if period.in_idx is None:
            mask[period.out_idx, :] = True
        else:
            mask[np.ix_(period.out_idx, period.in_idx)] = True
    return mask


def trained_coverage(run: RunLog) -> dict[str, float]:
    """``{target name: share of its weight's entries that were ever in a block}``."""
    return {name: float(trained_mask(target).mean()) for name, target in run.targets.items()}
