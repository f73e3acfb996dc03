"""Backbone weights and blocks that FSDP2 shards across ranks: their full value and row-local block writes.

``fully_shard`` (FSDP2) turns every parameter of a wrapped module, frozen or not, into a ``DTensor`` placed
``Shard(0)`` on a one-dimensional device mesh: rank ``r`` holds rows ``[r * c, r * c + local_rows)`` of the weight
(``c = ceil(rows / world)``, :func:`torch.chunk`'s split) in ``to_local()``; the whole weight exists only while FSDP
gathers it around the module's forward and backward. LoSiA's blocks are parameters of the same modules, so they are
sharded the same way. LoSiA touches a weight or a block outside those moments in three ways:

* its shape: a ``DTensor`` reports the global shape, so nothing is needed;
* its full value (importance, reselection, the write-back source): ``full_tensor()``, an all-gather on every rank
  (:func:`full_value`);
* a block write into the backbone weight (:func:`write_block`) or a whole new value for a block
  (:func:`assign`): every rank holds the full values, so each copies the rows that fall into its own shard. No
  communication: the row split of ``Shard(0)`` keeps each output neuron on one rank.
"""

from __future__ import annotations

import torch


def is_sharded(tensor: torch.Tensor) -> bool:
    """True for a ``DTensor`` (a parameter FSDP2 shards across ranks)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a sharded tensor, a fresh plain tensor: a collective, call it on every rank in order."""
    return tensor.detach().full_tensor()  # type: ignore[attr-defined]


def local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This rank's shard of a ``Shard(0)`` tensor (a view: writes reach the parameter) and its first global row."""
    from torch.distributed.tensor import Shard

    placements = tuple(tensor.placements)  # type: ignore[attr-defined]
    if placements != (Shard(0),):
        raise ValueError(
            f"LoSiA writes FSDP2 parameters sharded by rows (placements (Shard(0),)), got {placements}: a 2-D mesh "
            "(HSDP, tensor parallelism) is not supported."
        )
    mesh = tensor.device_mesh  # type: ignore[attr-defined]
    rows = tensor.shape[0]
    chunk = -(-rows // mesh.size())  # torch.chunk: equal shares of ceil(rows / world), the last ones short or empty
    start = min(mesh.get_local_rank() * chunk, rows)
    local = tensor.to_local()  # type: ignore[attr-defined]
    if start + local.shape[0] > rows:
        raise ValueError(f"unexpected shard of {local.shape[0]} rows at row {start} of a {rows}-row tensor")
    return local, start


@torch.no_grad()
def write_block(weight: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor | None, block: torch.Tensor) -> None:
    """``weight[out_idx][:, in_idx] = block`` for a sharded ``weight``: this rank writes the rows it holds.

    ``block`` is the full block, the same on every rank, and ``out_idx`` is sorted (so are the rows it writes).
    """
    local, start = local_rows(weight)
    inside = (out_idx >= start) & (out_idx < start + local.shape[0])
    rows = (out_idx[inside] - start).to(local.device)
    values = block[inside.to(block.device)].to(device=local.device, dtype=local.dtype)
    if in_idx is None:
        local.index_copy_(0, rows, values)
    else:
        local.index_put_((rows.unsqueeze(1), in_idx.to(local.device).unsqueeze(0)), values)


@torch.no_grad()
def assign(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """Give a sharded tensor a new whole value (``value``, the same on every rank): this rank copies its rows."""
    local, start = local_rows(tensor)
    local.copy_(value[start : start + local.shape[0]])
