"""How one tensor's changed entries are stored: flat indices, a packed bit mask, or the whole tensor.

Each tensor takes whichever is smallest on disk for its number of changed entries ``k`` out of ``n``:

* ``indices``: ``k`` flat indices (int32 when ``n < 2**31``) plus the ``k`` new values, best for very few changes;
* ``mask``: ``n / 8`` bytes of packed bits plus the ``k`` values, best once more than 1 entry in 32 changed (for
  int32 indices), which LoSiA's moving subnets reach over a long run;
* ``dense``: the whole tensor, when nearly everything changed (or its shape or dtype changed).

Values are stored in the trained tensor's dtype and copied bit for bit (through integer views), so applying a delta
reproduces the trained tensor exactly, NaN payloads and signed zeros included.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..model_files import as_bits, changed_mask

ENCODINGS = ("indices", "mask", "dense")


def index_dtype(numel: int) -> torch.dtype:
    """int32 for tensors with fewer than 2**31 entries, else int64."""
    return torch.int32 if numel < 2**31 else torch.int64


def encoded_bytes(numel: int, changed: int, element_size: int) -> dict[str, int]:
    """Bytes each encoding needs for ``changed`` of ``numel`` entries of ``element_size`` bytes."""
    index_size = torch.empty(0, dtype=index_dtype(numel)).element_size()
    return {
        "indices": changed * (index_size + element_size),
        "mask": math.ceil(numel / 8) + changed * element_size,
        "dense": numel * element_size,
    }


def encode(base: torch.Tensor | None, trained: torch.Tensor) -> tuple[str, dict[str, torch.Tensor], int] | None:
    """The stored form of ``trained`` relative to ``base``; None when every bit is the same.

    Args:
        base: The base tensor, or None when the base has no tensor of that name.
        trained: The trained tensor.

    Returns:
        ``(encoding, tensors, changed)``: the encoding's name, its tensors (keys ``"values"`` and ``"indices"`` or
        ``"mask"``, or ``"dense"``) and the number of changed entries.
    """
    numel = trained.numel()
    if base is None or base.shape != trained.shape or base.dtype != trained.dtype:
        return "dense", {"dense": trained.contiguous()}, numel
    changed = changed_mask(base, trained)
    count = int(changed.sum())
    if count == 0:
        return None
    sizes = encoded_bytes(numel, count, trained.element_size())
    encoding = min(ENCODINGS, key=lambda name: (sizes[name], ENCODINGS.index(name)))
    if encoding == "dense":
        return "dense", {"dense": trained.contiguous()}, count
    values = trained.contiguous().reshape(-1)[changed].clone()
    if encoding == "indices":
        indices = changed.nonzero().squeeze(1).to(index_dtype(numel))
        return "indices", {"indices": indices, "values": values}, count
    packed = np.packbits(changed.numpy(), bitorder="little")
    return "mask", {"mask": torch.from_numpy(packed), "values": values}, count


def decode(base: torch.Tensor | None, encoding: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rebuild the trained tensor from ``base`` and the stored form written by :func:`encode`."""
    if encoding == "dense":
        return tensors["dense"].clone()
    if base is None:
        raise ValueError(f"a {encoding!r} entry needs the base tensor")
    if encoding == "indices":
        positions = tensors["indices"].to(torch.int64)
    elif encoding == "mask":
        unpacked = np.unpackbits(tensors["mask"].numpy(), count=base.numel(), bitorder="little")
        positions = torch.from_numpy(unpacked.astype(bool)).nonzero().squeeze(1)
    else:
        raise ValueError(f"unknown delta encoding {encoding!r} (expected one of {ENCODINGS})")
    values = tensors["values"]
    if values.dtype != base.dtype or values.numel() != positions.numel():
        raise ValueError(
            f"delta entry does not fit its base tensor: {values.numel()} {values.dtype} values for "
            f"{positions.numel()} positions of a {base.dtype} tensor"
        )
    bits = as_bits(base).clone()
    bits[positions] = as_bits(values)
    return bits.view(base.dtype).reshape(base.shape)
