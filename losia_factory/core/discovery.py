"""Finding LoSiA's groups in an arbitrary model: decoder layers, their target linears and the output layer.

Nothing here depends on a model family's naming: the decoder layers are an ``nn.ModuleList`` (the one holding the most
parameters unless a path is given), targets are ``nn.Linear`` modules inside each layer, and the output layer is the
model's ``get_output_embeddings()`` or its ``lm_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from .config import LosiaConfigError


@dataclass(frozen=True)
class LinearRef:
    """A linear layer and its qualified name in the model."""

    name: str
    module: nn.Linear


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def find_decoder_layers(model: nn.Module, layers_path: str = "") -> tuple[str, nn.ModuleList]:
    """Return ``(qualified name, ModuleList)`` of the decoder layers.

    Args:
        model: The model.
        layers_path: Dotted path of the list (e.g. ``"model.layers"``); empty picks, among the ``nn.ModuleList``
            modules whose every entry contains an ``nn.Linear``, the one holding the most parameters.
    """
    if layers_path:
        try:
            layers = model.get_submodule(layers_path)
        except AttributeError as err:
            raise LosiaConfigError(
                "layers_path", f"layers_path={layers_path!r} does not name a submodule of the model: {err}"
            ) from None
        if not isinstance(layers, nn.ModuleList):
            raise LosiaConfigError(
                "layers_path", f"layers_path={layers_path!r} names a {type(layers).__name__}, not an nn.ModuleList."
            )
        return layers_path, layers
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if not all(any(isinstance(m, nn.Linear) for m in block.modules()) for block in module):
            continue
        size = _num_params(module)
        if best is None or size > best[0]:
            best = (size, name, module)
    if best is None:
        raise LosiaConfigError(
            "layers_path",
            "No nn.ModuleList of blocks containing nn.Linear layers was found in the model; set layers_path to the "
            "dotted path of its decoder layers (e.g. 'model.layers').",
        )
    return best[1], best[2]


def matches_target(relative_name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a linear layer's dotted name inside its decoder layer matches the ``target_modules`` patterns."""
    if "all" in patterns:
        return True
    last = relative_name.rsplit(".", 1)[-1]
    return any(p == last or fnmatchcase(relative_name, p) for p in patterns)


def find_target_linears(
    layers_name: str, layers: nn.ModuleList, patterns: tuple[str, ...], exclude: tuple[nn.Module, ...] = ()
) -> list[list[LinearRef]]:
    """The target linears of each decoder layer, in module order.

    Raises:
        ValueError: when the patterns match no linear layer at all; the message lists the available names.
    """
    per_layer: list[list[LinearRef]] = []
    available: list[str] = []
    for index, block in enumerate(layers):
        found = []
        for rel, module in block.named_modules():
            if not isinstance(module, nn.Linear) or any(module is e for e in exclude):
                continue
            if index == 0:
                available.append(rel)
            if matches_target(rel, patterns):
                found.append(LinearRef(f"{layers_name}.{index}.{rel}", module))
        per_layer.append(found)
    if not any(per_layer):
        raise LosiaConfigError(
            "target_modules",
            f"target_modules={list(patterns)} matches no nn.Linear inside the decoder layers ({layers_name}); "
            f"linear layers of {layers_name}.0 are {available}. Use 'all', one of these names, or a pattern.",
        )
    return per_layer


def find_output_layer(model: nn.Module) -> LinearRef | None:
    """The output layer (``get_output_embeddings()`` or ``lm_head``) when it is an ``nn.Linear``, else None."""
    module = None
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        module = getter()
    if module is None:
        module = getattr(model, "lm_head", None)
    if not isinstance(module, nn.Linear):
        return None
    for name, candidate in model.named_modules():
        if candidate is module:
            return LinearRef(name, module)
    return None
