"""The per-group learning-rate timeline of ``losia_log.jsonl``, with reselections and rewarms marked."""

from __future__ import annotations

from typing import Any

from .run import RunLog

# A group rewarms when its rate is below this share of the base rate (rounding of equal rates stays above it).
REWARM_BELOW = 1.0 - 1e-6


def lr_timeline(run: RunLog) -> dict[str, Any]:
    """Learning rates per group at every logged step, the reselections, and the logged steps of each rewarm.

    Returns:
        ``{"steps": [...], "base": [...] (the "extra" group, which follows the base schedule), "groups": {name:
        [...]}, "reselections": [[step, group], ...], "rewarming": {group: [steps whose rate is below base]},
        "summary": {"logged_steps", "groups", "reselections", "rewarming_share" (share of logged (step, group)
        pairs below the base rate), "lowest_ratio" (smallest rate / base rate seen at a step with base > 0)}}``.
    """
    base = run.lrs.get("extra")
    groups = {g: run.lrs[g] for g in run.group_names}
    rewarming: dict[str, list[int]] = {}
    below = pairs = 0
    lowest = None
    if base is not None:
        for name, rates in groups.items():
            for step, rate, reference in zip(run.lr_steps, rates, base):
                if rate is None or reference is None or reference <= 0:
                    continue
                pairs += 1
                ratio = rate / reference
                lowest = ratio if lowest is None else min(lowest, ratio)
                if ratio < REWARM_BELOW:
                    below += 1
                    rewarming.setdefault(name, []).append(step)
    return {
        "steps": run.lr_steps,
        "base": base,
        "groups": groups,
        "reselections": [[step, group] for step, group in run.reselections],
        "rewarming": rewarming,
        "summary": {
            "logged_steps": len(run.lr_steps),
            "groups": len(groups),
            "reselections": len(run.reselections),
            "rewarming_share": below / pairs if pairs else None,
            "lowest_ratio": lowest,
        },
    }
