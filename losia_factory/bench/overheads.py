"""LoSiA's importance work and reselections, timed directly, and the average step over a whole cycle.

The timed steps of a LoSiA run sit in a decoder layer's slot (the typical step: G - 1 slots in G). Over a cycle of
G slots of T steps the output layer measures for one slot, with its far larger full gradient, and every group
reselects once; both are added here as averages, so that ``cycle_us_per_token`` is what a long run pays per token.
"""

from __future__ import annotations

import time
from typing import Any

from .methods import decoder_layer_groups, output_layer_group
from .runner import Runner


def losia_overheads(runner: Runner, t_step: float, repeats: int = 3) -> dict[str, Any]:
    """Extra backward work of a measuring group and the time of a reselection, per kind of group.

    Measured directly, because the difference of two step medians drowns in timing noise on a busy machine: for one
    decoder layer and for the output layer, the extra backward work of a measuring group (the full weight gradient
    instead of the block gradient, on inputs of this benchmark's shape) plus its importance EMA update, and the time
    of one reselection.

    Args:
        runner: A LoSiA runner after its timed steps.
        t_step: Seconds of its typical step.
        repeats: Timings per piece; the fastest counts.

    Returns:
        ``importance_ms_per_step_<kind>`` and ``reselect_ms_<kind>`` for ``decoder_layer`` and, when trained as a
        group, ``output_layer``; ``overhead_fraction`` (importance work and reselections of a cycle per step, over
        ``t_step``) and ``cycle_extra_s`` (seconds to add to the typical step for the cycle average).
    """
    import torch

    from ..core.functional import gather_block
    from ..core.importance import ImportanceEMA

    optimizer, spec = runner.losia, runner.spec
    config = optimizer.config
    slot, groups = optimizer.schedule.time_slot, optimizer.schedule.num_groups
    generator = torch.Generator(device=spec.device).manual_seed(0)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            runner.sync()
            start = time.perf_counter()
            fn()
            runner.sync()
            times.append(time.perf_counter() - start)
        return min(times)

    def new_ema(weight):
        return ImportanceEMA(
            weight.shape, config.ema_betas, config.importance, config.torch_importance_dtype, weight.device
        )

    def group_cost(group: int) -> tuple[float, float]:
        extra = 0.0
        for target in optimizer.group_targets[group]:
            weight = target.weight.detach()
            out_f, in_f = weight.shape
            x = torch.randn(spec.tokens, in_f, generator=generator, device=spec.device, dtype=weight.dtype)
            dy = torch.randn(spec.tokens, out_f, generator=generator, device=spec.device, dtype=weight.dtype)
            x_sel = x if target.in_idx is None else x.index_select(1, target.in_idx)
            block = best(lambda: dy.index_select(1, target.out_idx).t().mm(x_sel))  # noqa: B023
            full = best(lambda: gather_block(dy.t().mm(x).float(), target.out_idx, target.in_idx))  # noqa: B023
            grad = dy.t().mm(x).float()
            ema = new_ema(weight)
            update = best(lambda: ema.update(weight, grad.clone(), consume_grad=True)) - best(grad.clone)  # noqa: B023
            extra += max(0.0, full - block) + max(0.0, update)
        # A reselection needs a scored window: give every target of the group EMA buffers, then time it.
        for target in optimizer.group_targets[group]:
            ema = new_ema(target.weight)
            ema.update(target.weight, torch.rand(target.weight.shape, generator=generator, device=spec.device))
            optimizer.importance[target.name] = ema
        runner.sync()
        start = time.perf_counter()
        with torch.no_grad():
            optimizer.reselect(group)
        runner.sync()
        return extra, time.perf_counter() - start

    out: dict[str, Any] = {"time_slot": slot, "groups": groups}
    decoder = decoder_layer_groups(optimizer)
    kinds = {"decoder_layer": decoder[len(decoder) // 2]}
    head = output_layer_group(optimizer)
    if head is not None:
        kinds["output_layer"] = head
    cost = {}
    for kind, group in kinds.items():
        cost[kind] = group_cost(group)
        out[f"importance_ms_per_step_{kind}"] = cost[kind][0] * 1e3
        out[f"reselect_ms_{kind}"] = cost[kind][1] * 1e3
    dec_importance, dec_reselect = cost["decoder_layer"]
    out_importance, out_reselect = cost.get("output_layer", (dec_importance, 0.0))
    reselections = len(decoder) * dec_reselect + out_reselect  # each group once per cycle of G*T steps
    cycle_importance = (len(decoder) * dec_importance + (out_importance if head is not None else 0.0)) / groups
    out["overhead_fraction"] = (cycle_importance + reselections / (groups * slot)) / t_step
    # The typical step already pays one decoder layer's importance work.
    out["cycle_extra_s"] = (out_importance - dec_importance) / groups + reselections / (groups * slot)
    return out
