"""Backbone weights that DeepSpeed ZeRO-3 partitions across ranks: their shape, their full value, block writes.

Under ZeRO-3 every parameter, frozen or not, is flattened and split into equal slices, one per rank
(``param.ds_tensor``); ``param.data`` is an empty placeholder except while DeepSpeed gathers the parameter around a
module's forward and backward. LoSiA touches a backbone weight outside those moments in three places:

* its shape, to size blocks and importance buffers: ``param.ds_shape`` (:func:`full_shape`);
* its full value, to form the importance of the measuring group (Eq. 3) and to read a new block at reselection:
  an all-gather of the ranks' slices on every rank (:func:`full_values`);
* the write-back of a trained block after every step (:func:`write_block`): every rank holds the full block, so
  each copies the entries that fall into its own slice of the flattened weight. No communication, and nothing is
  gathered; a write-back through ``GatheredParameters(modifier_rank=...)`` would move the whole weight twice;
* the saved model (:func:`gathered_state_dict`), in place of DeepSpeed's consolidated 16-bit state dict, which lists
  the blocks under their own names and, on CPU (gloo), can read a gathered weight before its all-gather completed.

Everything here is the identity for ordinary tensors, so callers need no branch of their own. FSDP2's sharded
parameters (``DTensor``) are handled by :mod:`.sharded`, to which :func:`full_values`, :func:`write_block` and
:func:`assign` hand them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import sharded


def is_partitioned(tensor: torch.Tensor) -> bool:
    """True for a DeepSpeed ZeRO-3 parameter (its value lives in per-rank slices)."""
    return hasattr(tensor, "ds_id")


def full_shape(tensor: torch.Tensor) -> torch.Size:
    """The shape of the whole tensor, also while ZeRO-3 holds only this rank's slice of it."""
    return _zero(tensor).ds_shape if is_partitioned(tensor) else tensor.shape


def full_numel(tensor: torch.Tensor) -> int:
    """Number of elements of the whole tensor (see :func:`full_shape`)."""
    return _zero(tensor).ds_numel if is_partitioned(tensor) else tensor.numel()


def full_values(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The whole value of each tensor: a ZeRO-3 parameter's gathered from every rank's slice, others as they are.

    A collective when any tensor is partitioned: every rank must call it with the same tensors in the same order. It
    always communicates, one all-gather of all the partitioned tensors' slices together, whatever DeepSpeed holds
    gathered at the moment. (``GatheredParameters`` skips the tensors a rank happens to have gathered already, and
    that state need not be the same on every rank, so its collectives can pair up wrongly across ranks.) The returned
    values of partitioned tensors are fresh copies, read only by LoSiA.
    """
    import torch.distributed as dist

    values = [sharded.full_value(t) if sharded.is_sharded(t) else t.detach() for t in tensors]
    partitioned = [i for i, t in enumerate(tensors) if is_partitioned(t)]
    if not partitioned:
        return values
    params = [_zero(tensors[i]) for i in partitioned]
    group = params[0].ds_process_group
    world = dist.get_world_size(group=group)
    dtype = params[0].ds_tensor.dtype
    if any(p.ds_tensor.dtype != dtype or p.ds_process_group is not group for p in params):
        raise ValueError("full_values() needs partitioned tensors of one dtype and one process group.")
    # The parameter's own device is the one it computes and communicates on; its slice may sit elsewhere (offload_param
    # keeps it in CPU memory).
    device = params[0].device
    local = torch.cat([p.ds_tensor.detach().reshape(-1).to(device) for p in params])
    gathered = torch.empty(world * local.numel(), dtype=dtype, device=device)
    dist.all_gather_into_tensor(gathered, local, group=group)
    # Rank r's part of ``gathered`` is its slices of every tensor in turn; a tensor's slices, rank after rank, are its
    # flattened value followed by padding.
    per_rank = gathered.view(world, -1)
    offset = 0
    for i, param in zip(partitioned, params):
        size = param.ds_tensor.numel()
        flat = per_rank[:, offset : offset + size].reshape(-1)
        values[i] = flat[: param.ds_numel].view(param.ds_shape)
        offset += size
    return values


@torch.no_grad()
def gathered_state_dict(module: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with the whole value of every ZeRO-3 parameter, on CPU: what a saved model holds.

    The keys are the module's own (its ``state_dict`` hooks apply, so LoSiA's blocks stay out). A collective: every
    rank calls it, and each partitioned tensor is gathered on its own (:func:`full_values`), so no more than one
    whole weight is in flight at a time. Ranks that do not save pass ``keep=False``: they take part in the gathers
    and return an empty dict. A parameter listed under two names (tied weights) is gathered once and kept as one
    tensor under both.

    DeepSpeed's own ``_zero3_consolidated_16bit_state_dict`` is not used: it walks ``named_parameters`` and so
    saves the blocks as ``*.losia_block``, and it gathers a module's parameters with several asynchronous
    all-gathers of which it waits for the last only, which on CPU (gloo, whose work runs on several threads) lets a
    rank copy a not yet filled buffer back into its slice of the weight.
    """
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}  # id of a tensor -> the first name it was stored under
    for name, tensor in module.state_dict(keep_vars=True).items():
        first = seen.setdefault(id(tensor), name)
        if first != name:  # the same decision on every rank, so the gathers stay paired
            if keep:
                state[name] = state[first]
            continue
        value = full_values([tensor])[0]
        if keep:
            # A partitioned tensor's value is a view into the gathered buffer (padding included): store it alone.
            state[name] = value.to("cpu", copy=True) if is_partitioned(tensor) else value.detach().cpu()
    return state


def _is_available(param: torch.Tensor) -> bool:
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return _zero(param).ds_status == ZeroParamStatus.AVAILABLE


@torch.no_grad()
def write_block(weight: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor | None, block: torch.Tensor) -> None:
    """``weight[out_idx][:, in_idx] = block`` in the weight's dtype (all input neurons when ``in_idx`` is None).

    ``block`` is the full block, the same on every rank. A ZeRO-3 weight gets the entries of its local slice written
    into ``ds_tensor``, and into the gathered value too when one is live (a persistent parameter, or inside a
    forward pass), so that both stay equal.
    """
    if sharded.is_sharded(weight):
        return sharded.write_block(weight, out_idx, in_idx, block)
    values = block.to(weight.dtype)
    if not is_partitioned(weight) or _is_available(weight):
        if in_idx is None:
            weight.data.index_copy_(0, out_idx, values)
        else:
            weight.data.index_put_((out_idx.unsqueeze(1), in_idx.unsqueeze(0)), values)
    if not is_partitioned(weight):
        return
    local = _zero(weight).ds_tensor
    columns = _zero(weight).ds_shape[1]
    # Flat positions of the block's entries in the row-major weight, then the ones inside this rank's slice
    # [start, start + size); the last rank's slice is padded past ds_numel, which no block entry reaches.
    cols = torch.arange(columns, device=out_idx.device) if in_idx is None else in_idx
    flat = (out_idx.unsqueeze(1) * columns + cols.unsqueeze(0)).reshape(-1)
    size = local.numel()
    start = _partition_rank(weight) * size
    inside = (flat >= start) & (flat < start + size)
    local.data.view(-1)[(flat[inside] - start).to(local.device)] = values.reshape(-1)[inside].to(local.device)


@torch.no_grad()
def assign(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """``tensor[...] = value`` with ``value`` the whole new value (the same on every rank); FSDP2 keeps its rows."""
    if sharded.is_sharded(tensor):
        sharded.assign(tensor, value)
    else:
        tensor.copy_(value)


def _partition_rank(param: torch.Tensor) -> int:
    """This rank's position in the process group that partitions ``param``."""
    import torch.distributed as dist

    return dist.get_rank(group=_zero(param).ds_process_group)


def _zero(tensor: torch.Tensor) -> Any:
    """``tensor`` with the attributes DeepSpeed adds to ZeRO-3 parameters (``ds_shape``, ``ds_tensor``, ...)."""
    return tensor
