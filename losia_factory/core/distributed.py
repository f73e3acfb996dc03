"""What LoSiA adds to data-parallel training: the averaged importance gradient and the subnet-agreement check.

Block gradients are ordinary parameter gradients, so DDP and DeepSpeed reduce them. The full weight gradients a
measuring group collects for its importance scores are not parameters: every rank holds the gradient of its own
micro-batches only. :func:`average_across_ranks` turns them into the gradient of the global batch (the mean over
ranks, as DDP averages parameter gradients) before the EMA update, so every rank scores the same matrix and localizes
the same subnet; :func:`check_same_indices` verifies that after each reselection.

Everything here is a no-op when ``torch.distributed`` is not initialized or has a single rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def data_parallel_size() -> int:
    """Number of ranks of the default process group, or 1 when not running distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def average_across_ranks(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over all ranks (one all-reduce per tensor, issued together)."""
    world = data_parallel_size()
    if world == 1 or not tensors:
        return
    pending = [dist.all_reduce(t, op=dist.ReduceOp.SUM, async_op=True) for t in tensors]
    for work, tensor in zip(pending, tensors):
        work.wait()
        tensor.div_(world)


def check_same_indices(named_indices: Sequence[tuple[str, torch.Tensor]]) -> None:
    """Raise ``RuntimeError`` unless every rank holds the same index vectors (called after each reselection).

    Cost: two all-reduces (MIN and MAX) of the concatenated int64 indices, a few KB per decoder layer.
    """
    if data_parallel_size() == 1 or not named_indices:
        return
    local = torch.cat([idx.reshape(-1).to(torch.int64) for _, idx in named_indices])
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if torch.equal(low, local) and torch.equal(high, local):
        return
    offset = 0
    for name, idx in named_indices:
        span = slice(offset, offset + idx.numel())
        if not (torch.equal(low[span], local[span]) and torch.equal(high[span], local[span])):
            raise RuntimeError(
                f"LoSiA subnets differ across ranks at {name} (rank {dist.get_rank()}). The ranks scored different "
                "importance matrices: check that every rank runs the same model, configuration and seed."
            )
        offset += idx.numel()
