"""LoSiA under DeepSpeed ZeRO stages 1-3: the engine owns the blocks' fp32 masters and Adam moments.

ZeRO flattens each param group of the client optimizer into flat buffers, keeps an fp32 partition of them per rank,
and runs the client optimizer's ``step`` on those partitions; after the step it copies them back into the model's
parameters (and, in stages 1/2, all-gathers them). A tensor we wrote into a block parameter would therefore be
overwritten at the next step. Reselection goes through DeepSpeed's supported accessors instead
(``deepspeed.utils.safe_get_full_fp32_param`` and ``safe_set_full_fp32_param``, which serve every stage); the Adam
moments are the client optimizer's own state of the flat partitions and are zeroed in place by
:class:`~.optimizer.LosiaAdamW`.

ZeRO-3 also partitions the backbone weights: :mod:`.partitioned` gives their shapes, gathers them where LoSiA reads
them whole (importance, reselection) and writes each trained block into the rank's own slice.

``round_robin_gradients`` is refused: in DeepSpeed 0.18 it reorders the flat buffer but not the parameter-to-fp32
mapping behind the ``safe_*`` accessors, which then read and write other parameters' values; :func:`bind_deepspeed`
verifies the mapping before training starts.
"""

from __future__ import annotations

import torch

from .optimizer import LosiaAdamW
from .partitioned import full_values, is_partitioned


class DeepSpeedZeroMasters:
    """:class:`~.optimizer.EngineMasters` over DeepSpeed ZeRO 1-3 (the bf16 optimizer of stage 0 too)."""

    def __init__(self) -> None:
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        self._get = safe_get_full_fp32_param
        self._set = safe_set_full_fp32_param

    def get(self, block: torch.Tensor) -> torch.Tensor:
        # A collective (an all-reduce of the block's fragments), made on every rank in the same order.
        return self._get(block).to(torch.float32)

    def set(self, block: torch.Tensor, value: torch.Tensor) -> None:
        # Each rank copies its own fragment of ``value`` into its fp32 partition.
        self._set(block, value.to(torch.float32))

    def flat_params(self, optimizer: LosiaAdamW, group: int) -> list[torch.Tensor]:
        block = optimizer.group_targets[group][0].block
        if not is_partitioned(block):
            return optimizer.param_group_of(group)["params"]  # stages 1/2: the group's flat fp32 partition
        # Stage 3 empties the param groups between steps and keeps one flat fp32 tensor per sub-group of a group.
        engine = getattr(block, "_z3_optimizer")  # noqa: B009 (set by DeepSpeed on ZeRO-3 parameters)
        index = next(i for i, g in enumerate(optimizer.param_groups) if g.get("losia_group") == group)
        return [
            flat
            for sub_group, flat in enumerate(engine.fp32_partitioned_groups_flat)
            if engine.sub_group_to_group_id[sub_group] == index
        ]


def engine_owns_masters(optimizer: LosiaAdamW) -> bool:
    """True when DeepSpeed has replaced the blocks' optimizer entries by flat fp32 partitions of its own."""
    block = optimizer.targets[0].block
    return is_partitioned(block) or hasattr(block, "_hp_mapping")


def bind_deepspeed(optimizer: LosiaAdamW) -> bool:
    """Switch ``optimizer`` to DeepSpeed-owned masters when its engine keeps them; returns whether it did.

    Call it on every rank after ``deepspeed.initialize`` (``LosiaCallback`` does at the start of training); then
    call ``optimizer.finish_step()`` after each ``engine.step()`` that stepped the optimizer.
    """
    if not engine_owns_masters(optimizer):
        return False
    masters = DeepSpeedZeroMasters()
    for target in optimizer.targets:
        block = target.block
        # The engine's fp32 master must be the value the model holds (exactly, up to the model's dtype).
        if not torch.equal(masters.get(block).to(block.dtype), full_values([block])[0]):
            raise RuntimeError(
                f"DeepSpeed's fp32 master of {target.name}.losia_block does not match the parameter, so its "
                "safe_get/set_full_fp32_param accessors address other values. This happens with "
                '"round_robin_gradients": true (DeepSpeed <= 0.18): set it to false in the DeepSpeed config.'
            )
    optimizer.bind_engine_masters(masters)
    return True
