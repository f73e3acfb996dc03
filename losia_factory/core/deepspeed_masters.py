"""LoSiA under DeepSpeed ZeRO stage 1 and 2: the engine owns the blocks' fp32 masters and Adam moments.

ZeRO 1/2 flattens each param group of the client optimizer into one buffer, keeps an fp32 partition of it per rank,
and runs the client optimizer's ``step`` on those partitions; after the step it copies them back into the model's
parameters and all-gathers them. A tensor we wrote into a block parameter would therefore be overwritten at the next
step. Reselection goes through DeepSpeed's supported accessors instead (``deepspeed.utils.safe_get_full_fp32_param``
and ``safe_set_full_fp32_param``); the Adam moments are the client optimizer's own state of the flat partition and are
zeroed in place by :class:`~.optimizer.LosiaAdamW`.

ZeRO-3 partitions the backbone weights themselves (LoSiA writes into them after every step) and is refused. So is
``round_robin_gradients``: in DeepSpeed 0.18 it reorders the flat buffer but not the parameter-to-fp32 mapping behind
the ``safe_*`` accessors, which then read and write other parameters' values; :func:`bind_deepspeed` verifies the
mapping before training starts.
"""

from __future__ import annotations

import torch

from .optimizer import LosiaAdamW


class DeepSpeedZeroMasters:
    """:class:`~.optimizer.EngineMasters` over DeepSpeed ZeRO 1/2 (the bf16 optimizer of stage 0 too)."""

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


def engine_owns_masters(optimizer: LosiaAdamW) -> bool:
    """True when DeepSpeed has replaced the blocks' optimizer entries by flat fp32 partitions of its own.

    Raises:
        ValueError: The blocks are ZeRO-3 parameters (partitioned backbone), which LoSiA does not support.
    """
    block = optimizer.targets[0].block
    if hasattr(block, "ds_id"):
        raise ValueError(
            "DeepSpeed ZeRO stage 3 partitions the backbone weights, which LoSiA writes the trained subnets into. "
            "Use ZeRO stage 1 or 2 (recipes/deepspeed/ds_z2_config.json)."
        )
    return hasattr(block, "_hp_mapping")


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
        if not torch.equal(masters.get(block).to(block.dtype), block.detach()):
            raise RuntimeError(
                f"DeepSpeed's fp32 master of {target.name}.losia_block does not match the parameter, so its "
                "safe_get/set_full_fp32_param accessors address other values. This happens with "
                '"round_robin_gradients": true (DeepSpeed <= 0.18): set it to false in the DeepSpeed config.'
            )
    optimizer.bind_engine_masters(masters)
    return True
