"""The weights of a saved Hugging Face model folder, read one tensor at a time (single or sharded safetensors).

Nothing here builds a model: analysis figures and sparse deltas of multi-billion-parameter runs only ever hold one
tensor (or one shard being written) in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class NotAFullModelError(ValueError):
    """A folder holds no full model in safetensors format (an adapter, ``.bin`` weights, or nothing)."""


def weight_map(folder: str | os.PathLike[str], argument: str = "folder") -> dict[str, str]:
    """``{tensor name: file name}`` of the safetensors weights in ``folder``.

    Args:
        folder: A model folder as ``save_pretrained`` writes it.
        argument: How the caller's user named this folder (used in the error message).

    Raises:
        NotAFullModelError: No ``model.safetensors`` nor ``model.safetensors.index.json`` in ``folder``.
    """
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / INDEX_FILE
    if index.is_file():
        mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {str(name): str(file) for name, file in mapping.items()}
    single = folder / SINGLE_FILE
    if single.is_file():
        with safe_open(str(single), framework="pt") as handle:
            return dict.fromkeys(handle.keys(), SINGLE_FILE)
    what = "a LoRA/PEFT adapter" if (folder / "adapter_config.json").is_file() else "no safetensors weights"
    raise NotAFullModelError(
        f"{argument} {folder} is not a full model saved as safetensors ({what}: neither {SINGLE_FILE} nor "
        f"{INDEX_FILE}). Pass the output folder of a full-model run (finetuning_type: losia, full or freeze) or the "
        "base model folder."
    )


class WeightReader:
    """Lazy access to the tensors of a model folder; use it as a context manager.

    Args:
        folder: The model folder.
        argument: How the user named this folder, for error messages (e.g. ``--base``).
    """

    def __init__(self, folder: str | os.PathLike[str], argument: str = "folder") -> None:
        self.folder = Path(folder)
        self.argument = argument
        self.files = weight_map(self.folder, argument)
        self._handles: dict[str, Any] = {}

    def __enter__(self) -> WeightReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handles.clear()

    def names(self) -> list[str]:
        """Tensor names, sorted."""
        return sorted(self.files)

    def _handle(self, name: str) -> Any:
        from safetensors import safe_open

        file = self.files[name]
        if file not in self._handles:
            self._handles[file] = safe_open(str(self.folder / file), framework="pt")
        return self._handles[file]

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` (KeyError naming the folder when it has none)."""
        if name not in self.files:
            raise KeyError(f"{self.argument} {self.folder} has no tensor {name!r}")
        return self._handle(name).get_tensor(name)

    def file_bytes(self) -> int:
        """Total size of the weight files on disk."""
        return sum((self.folder / file).stat().st_size for file in set(self.files.values()))

    def metadata(self, file: str) -> dict[str, str]:
        """The safetensors header metadata of one weight file."""
        from safetensors import safe_open

        with safe_open(str(self.folder / file), framework="pt") as handle:
            return dict(handle.metadata() or {})


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw little-endian bytes of a tensor (any dtype, bfloat16 included)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def update_checksum(digest: Any, name: str, tensor: torch.Tensor) -> None:
    """Feed one tensor into a sha256: its name, dtype, shape and bytes (so a renamed or reshaped tensor differs)."""
    digest.update(f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
    digest.update(tensor_bytes(tensor))


def weights_checksum(folder: str | os.PathLike[str], argument: str = "folder") -> str:
    """sha256 over every tensor of a model folder in name order (name, dtype, shape, bytes), as hex."""
    digest = hashlib.sha256()
    with WeightReader(folder, argument) as reader:
        for name in reader.names():
            update_checksum(digest, name, reader.get(name))
    return digest.hexdigest()


def iter_tensors(folder: str | os.PathLike[str], argument: str = "folder") -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of a model folder in name order, one tensor in memory at a time."""
    with WeightReader(folder, argument) as reader:
        for name in reader.names():
            yield name, reader.get(name)


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_bits(tensor: torch.Tensor) -> torch.Tensor:
    """A flat integer view of a tensor's bits (same element size), so comparisons and copies are bitwise.

    Float equality would call -0.0 and 0.0 the same and every NaN different; bit patterns do neither.
    """
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.view(torch.uint8)
    return flat.view(_SAME_SIZE_INT[flat.element_size()])


def changed_mask(base: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
    """Flat boolean mask of the entries whose bits differ between two tensors of the same shape and dtype."""
    if base.shape != trained.shape or base.dtype != trained.dtype:
        raise ValueError(
            f"cannot compare entries of tensors with different shape/dtype: {tuple(base.shape)} {base.dtype} vs "
            f"{tuple(trained.shape)} {trained.dtype}"
        )
    return as_bits(base) != as_bits(trained)
