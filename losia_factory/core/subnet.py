"""One trained linear layer: its fp32 block parameter, index vectors and the forward that trains them.

The module keeps its own class, name and ``weight``; LoSiA adds to it

* ``losia_block``: ``nn.Parameter`` (float32, shape ``(n_out, n_in)``), the master copy of ``W[out_idx][:, in_idx]``;
* ``losia_out_idx`` / ``losia_in_idx``: non-persistent int64 buffers (``losia_in_idx`` is None when the block spans
  all input neurons, as for the output layer);
* an instance-level ``forward`` that calls :class:`~.functional.SubnetLinearFunction` (Pro) or
  :class:`~.functional.BlockInjectFunction` (plain).

``losia_block`` is hidden from the module's ``state_dict`` so saved models keep the base model's tensor names; the
optimizer's state dict carries the masters and indices instead.
"""

from __future__ import annotations

import types
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .functional import BlockInjectFunction, GradientSink, SubnetLinearFunction, gather_block
from .partitioned import assign, full_shape, full_values, is_partitioned, write_block

BLOCK = "losia_block"
OUT_IDX = "losia_out_idx"
IN_IDX = "losia_in_idx"
_HANDLES = "_losia_hook_handles"


def _pro_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():  # evaluation and generation: the backbone already holds the trained block
        return F.linear(x, self.weight, self.bias)
    return SubnetLinearFunction.apply(
        x, self.weight, self.bias, self.losia_block, self.losia_out_idx, self.losia_in_idx, self._losia_sink
    )


def _plain_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return F.linear(x, self.weight, self.bias)
    weight = BlockInjectFunction.apply(
        self.weight, self.losia_block, self.losia_out_idx, self.losia_in_idx, self._losia_sink
    )
    return F.linear(x, weight, self.bias)


def _hide_block(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    state_dict.pop(prefix + BLOCK, None)


def _note_weight_reload(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    module._losia_weight_reloaded = prefix + "weight" in state_dict


def _after_load(module: nn.Module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if k != BLOCK and not k.endswith("." + BLOCK)]
    # New backbone values (e.g. a checkpoint being resumed) make the master block stale: take it from the weight
    # again, so that no later write-back restores old values. An optimizer state loaded afterwards brings back the
    # exact fp32 masters and indices of the checkpoint.
    # Under ZeRO-3 the engine loads only placeholders here, then its partitions, then our optimizer state.
    if module.__dict__.pop("_losia_weight_reloaded", False) and not is_partitioned(module.weight):
        with torch.no_grad():
            weight = full_values([cast(torch.Tensor, module.weight)])[0]  # FSDP2: gathered (every rank loads)
            assign(getattr(module, BLOCK), gather_block(weight, getattr(module, OUT_IDX), getattr(module, IN_IDX)))


def random_indices(features: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct indices out of ``features``, uniformly at random, sorted ascending (on CPU)."""
    return torch.sort(torch.randperm(features, generator=generator)[:count]).values


class SubnetTarget:
    """Handle on one linear layer trained through a subnet block.

    Args:
        name: Qualified module name in the model (e.g. ``model.layers.3.self_attn.q_proj``).
        module: The ``nn.Linear`` (any subclass with ``weight``/``bias`` and the standard forward).
        group: Index of its LoSiA group.
        num_out: Output neurons in the block.
        num_in: Input neurons in the block, or None for all of them (the output layer).
        pro: Install the LoSiA-Pro forward (True) or the plain reference forward (False).
        generator: Source of the random initial subnet.
    """

    def __init__(
        self,
        name: str,
        module: nn.Linear,
        group: int,
        num_out: int,
        num_in: int | None,
        pro: bool,
        generator: torch.Generator,
    ) -> None:
        if hasattr(module, BLOCK):
            raise RuntimeError(
                f"{name} already carries a LoSiA block; call detach_losia(model) before attaching again."
            )
        self.name = name
        self.module = module
        self.group = group
        weight = module.weight
        out_features, in_features = full_shape(weight)
        self.num_out = num_out
        self.num_in = num_in
        out_idx = random_indices(out_features, num_out, generator).to(weight.device)
        in_idx = None if num_in is None else random_indices(in_features, num_in, generator).to(weight.device)
        weight.requires_grad_(False)
        # full_values: a model loaded under ZeRO-3 holds only this rank's slice of the weight.
        block = nn.Parameter(gather_block(full_values([weight])[0], out_idx, in_idx).to(torch.float32))
        module.register_parameter(BLOCK, block)
        module.register_buffer(OUT_IDX, out_idx, persistent=False)
        module.register_buffer(IN_IDX, in_idx, persistent=False)
        module._losia_sink = None
        module.forward = types.MethodType(_pro_forward if pro else _plain_forward, module)
        setattr(
            module,
            _HANDLES,
            (
                module.register_state_dict_post_hook(_hide_block),
                module.register_load_state_dict_pre_hook(_note_weight_reload),
                module.register_load_state_dict_post_hook(_after_load),
            ),
        )

    # The module owns the tensors (so .to() and .cuda() move them); the handle always reads them from it.
    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def block(self) -> nn.Parameter:
        return getattr(self.module, BLOCK)

    @property
    def out_idx(self) -> torch.Tensor:
        return getattr(self.module, OUT_IDX)

    @property
    def in_idx(self) -> torch.Tensor | None:
        return getattr(self.module, IN_IDX)

    @property
    def sink(self) -> GradientSink | None:
        return self.module._losia_sink

    def set_measuring(self, measuring: bool) -> None:
        """Start (or stop) collecting the full weight gradient in the backward passes to come."""
        if measuring and self.module._losia_sink is None:
            self.module._losia_sink = GradientSink()
        elif not measuring:
            self.module._losia_sink = None

    @property
    def block_shape(self) -> torch.Size:
        """Shape of the block (also under ZeRO-3, where ``block`` holds a slice of it between steps)."""
        return full_shape(self.block)

    def write_back(self, values: torch.Tensor | None = None) -> None:
        """Copy the master block (or ``values``, the full block) into the backbone weight, in its dtype.

        Under ZeRO-3 pass ``values`` (see :func:`~.partitioned.full_values`): the block holds only a slice.
        """
        write_block(self.weight, self.out_idx, self.in_idx, self.block if values is None else values)

    @torch.no_grad()
    def move_to(
        self,
        out_idx: torch.Tensor,
        in_idx: torch.Tensor | None,
        old_master: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Relocate the block to new indices; its master values come from the backbone weight.

        Entries selected both before and after keep their fp32 master value instead of the (possibly bf16) copy in
        the backbone, so a reselection loses no precision on them. Under ZeRO-3 pass ``old_master`` and the whole
        ``weight`` (:func:`~.partitioned.full_values`); ``block`` is then left to the engine.

        Args:
            out_idx: New output indices (sorted).
            in_idx: New input indices (sorted), or None for a block spanning all inputs.
            old_master: The current fp32 master values when an engine (DeepSpeed) keeps them outside ``block``;
                defaults to ``block`` itself.
            weight: The whole backbone weight when the module holds a slice of it (ZeRO-3); defaults to ``weight``.

        Returns:
            The new fp32 master block (also copied into ``block``, in its dtype).
        """
        if (in_idx is None) != (self.in_idx is None):
            raise ValueError(f"{self.name}: in_idx must be None exactly when the block spans all input neurons.")
        out_idx = out_idx.to(self.out_idx.device)
        in_idx = None if in_idx is None else in_idx.to(self.out_idx.device)
        # full_values: the whole block and weight also where FSDP2 shards them (the identity otherwise).
        old_block = full_values([self.block])[0] if old_master is None else old_master
        source = full_values([self.weight])[0] if weight is None else weight
        new_block = gather_block(source, out_idx, in_idx).to(torch.float32)
        out_features, in_features = full_shape(self.weight)
        rows_new, rows_old = _overlap(self.out_idx, out_idx, out_features)
        if in_idx is None:
            new_block[rows_new] = old_block[rows_old]
        else:
            cols_new, cols_old = _overlap(self.in_idx, in_idx, in_features)
            new_block[rows_new.unsqueeze(1), cols_new.unsqueeze(0)] = old_block[
                rows_old.unsqueeze(1), cols_old.unsqueeze(0)
            ]
        self.out_idx.copy_(out_idx)
        if in_idx is not None:
            self.in_idx.copy_(in_idx)
        if not is_partitioned(self.block):
            assign(self.block, new_block)
        return new_block


def write_back_block(module: nn.Linear) -> None:
    """Copy a module's fp32 master block into its backbone weight (in the weight's dtype)."""
    block = full_values([getattr(module, BLOCK)])[0]
    write_block(module.weight, getattr(module, OUT_IDX), getattr(module, IN_IDX), block)


def remove_subnet(module: nn.Linear) -> None:
    """Remove everything LoSiA added to a module; the backbone weight keeps the trained values."""
    write_back_block(module)
    for handle in getattr(module, _HANDLES):
        handle.remove()
    for attr in (_HANDLES, "forward", "_losia_sink"):
        module.__dict__.pop(attr, None)
    del module._parameters[BLOCK]
    del module._buffers[OUT_IDX]
    del module._buffers[IN_IDX]


def _overlap(old: torch.Tensor, new: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``(in new, in old)`` of the indices present in both sorted index vectors."""
    position = torch.full((size,), -1, dtype=torch.long, device=old.device)
    position[old] = torch.arange(old.numel(), device=old.device)
    in_old = position[new]
    keep = in_old >= 0
    return keep.nonzero().squeeze(1), in_old[keep]
