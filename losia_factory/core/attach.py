"""Preparing a model for LoSiA and building its optimizer in one call."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, cast

import torch
from torch import nn

from .config import LosiaConfig, LosiaConfigError
from .discovery import find_decoder_layers, find_output_layer, find_target_linears
from .optimizer import LosiaAdamW
from .partitioned import full_shape, is_partitioned
from .selection import subnet_size
from .subnet import BLOCK, SubnetTarget, remove_subnet
from .tied import TiedEmbedding, find_tied_embedding

ATTACHMENT = "losia_attachment"


@dataclass(frozen=True)
class LosiaLayout:
    """What ``prepare_losia`` found: decoder-layer list, targets per group and the output layer (if trained)."""

    layers_path: str
    groups: tuple[tuple[str, ...], ...]
    output_layer: str | None
    extra_trainable: tuple[str, ...]


@dataclass
class LosiaAttachment:
    """Everything ``prepare_losia`` added to a model, kept on it as ``model.losia_attachment``."""

    config: LosiaConfig
    targets: list[SubnetTarget]
    num_groups: int
    extra_params: list[nn.Parameter]
    layout: LosiaLayout
    generator: torch.Generator
    tied_embedding: TiedEmbedding | None = None


def prepare_losia(model: nn.Module, config: LosiaConfig | None = None) -> LosiaAttachment:
    """Turn ``model`` into a LoSiA model (no optimizer yet); see :func:`attach_losia`.

    Every parameter is frozen except the fp32 subnet blocks added to the target linears and the parameters matched
    by ``config.extra_trainable``. Groups are the decoder layers that hold targets, in order, and the output layer
    when ``0 < config.output_rank_factor < 1``, before them or after them as ``config.output_order`` says; at
    ``output_rank_factor == 1`` the output layer trains densely instead. Initial subnets are drawn at random from
    ``config.seed``.
    """
    config = config or LosiaConfig()
    if find_attachment(model) is not None or any(hasattr(m, BLOCK) for m in model.modules()):
        raise RuntimeError("The model already has LoSiA attached; call detach_losia(model) first.")
    output = find_output_layer(model) if config.output_rank_factor > 0 else None
    if config.output_rank_factor > 0 and output is None:
        raise LosiaConfigError(
            "output_rank_factor",
            "output_rank_factor > 0 but the model has no nn.Linear output layer (get_output_embeddings() or "
            "lm_head); set output_rank_factor to 0.",
        )
    layers_name, layers = find_decoder_layers(model, config.layers_path)
    exclude = (output.module,) if output is not None else ()
    per_layer = [refs for refs in find_target_linears(layers_name, layers, config.target_modules, exclude) if refs]
    # p_o = 1 would make the output block the whole weight: nothing left to localize, so it trains densely on the
    # base schedule (the paper's FFTO variant) instead of as a group with importance buffers, resets and rewarms.
    dense_output = output if output is not None and config.output_rank_factor >= 1.0 else None
    subnet_output = output if dense_output is None else None

    target_weights = {id(ref.module.weight) for refs in per_layer for ref in refs}
    if output is not None:
        target_weights.add(id(output.module.weight))
    extra_named = _match_extra(model, config.extra_trainable, target_weights)
    if dense_output is not None:
        # nn.Linear types its weight as a Tensor; it is the Parameter itself.
        extra_named.append((f"{dense_output.name}.weight", cast(nn.Parameter, dense_output.module.weight)))

    for param in model.parameters():
        param.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    # Group numbers: the decoder layers in order, with the output layer's group before them ("first", as in the
    # authors' code: it gets its first localization T steps into training) or after them ("last").
    first = subnet_output is not None and config.output_order == "first"
    offset = 1 if first else 0
    targets: list[SubnetTarget] = []
    output_target = None
    if subnet_output is not None:
        vocab = full_shape(subnet_output.module.weight)[0]
        output_target = SubnetTarget(
            subnet_output.name,
            subnet_output.module,
            0 if first else len(per_layer),
            subnet_size(vocab, config.output_rank_factor),
            None,
            config.pro,
            generator,
        )
    # The output layer's random rows are drawn first either way, so both orders start from the same subnets.
    for group, refs in enumerate(per_layer):
        for ref in refs:
            out_features, in_features = full_shape(ref.module.weight)
            targets.append(
                SubnetTarget(
                    ref.name,
                    ref.module,
                    group + offset,
                    subnet_size(out_features, config.rank_factor),
                    subnet_size(in_features, config.rank_factor),
                    config.pro,
                    generator,
                )
            )
    num_groups = len(per_layer)
    tied = None
    if output_target is not None:
        if first:
            targets.insert(0, output_target)
        else:
            targets.append(output_target)
        num_groups += 1
        embedding = find_tied_embedding(model, output_target.module)
        if embedding is not None and is_partitioned(embedding.weight):
            # The embedding's forward would hand the output layer's block to autograd while ZeRO-3 holds only a
            # slice of it (DeepSpeed gathers a module's own parameters, and the block belongs to the output layer).
            raise LosiaConfigError(
                "output_rank_factor",
                "the output layer shares its weight with the input embedding (tied embeddings), which LoSiA cannot "
                "train as a subnet under DeepSpeed ZeRO-3. Set output_rank_factor to 0 (or 1 to train it densely), "
                "or use ZeRO stage 1 or 2.",
            )
        if embedding is not None:
            tied = TiedEmbedding(embedding, output_target.module, config.pro)
    for _, param in extra_named:
        param.requires_grad_(True)
    layout = LosiaLayout(
        layers_path=layers_name,
        groups=tuple(tuple(t.name for t in targets if t.group == g) for g in range(num_groups)),
        output_layer=None if subnet_output is None else subnet_output.name,
        extra_trainable=tuple(name for name, _ in extra_named),
    )
    attachment = LosiaAttachment(
        config, targets, num_groups, [p for _, p in extra_named], layout, generator, tied_embedding=tied
    )
    setattr(model, ATTACHMENT, attachment)  # a plain attribute: nn.Module registers only modules and tensors
    return attachment


def find_attached(model: nn.Module | None, attribute: str) -> Any:
    """The object a method attached to ``model`` as ``attribute``, searched on ``model`` and its submodules.

    Wrappers (DDP, DeepSpeed, accelerate, a value head) hold the prepared model as a submodule, so one walk over
    ``modules()`` finds it; the walk stops at the first hit, normally the outermost module. Methods keep their
    attachment as a plain attribute (``nn.Module`` registers only modules and tensors), hence the ``__dict__`` look-up.
    """
    if not isinstance(model, nn.Module):
        return None
    for module in model.modules():
        attachment = module.__dict__.get(attribute)
        if attachment is not None:
            return attachment
    return None


def find_attachment(model: nn.Module | None) -> LosiaAttachment | None:
    """The ``LosiaAttachment`` of ``model`` or of one of its submodules (e.g. inside a value-head wrapper)."""
    return find_attached(model, ATTACHMENT)


def create_losia_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> LosiaAdamW:
    """Build the :class:`LosiaAdamW` of a model prepared with :func:`prepare_losia`.

    Besides the subnet blocks it trains, with plain AdamW, the ``extra_trainable`` parameters and any other parameter
    of ``model`` that requires a gradient (for instance a value head wrapped around the prepared model).
    """
    attachment = find_attachment(model)
    if attachment is None:
        raise RuntimeError("The model has no LoSiA attachment; call prepare_losia(model, config) first.")
    # Parameters made trainable after preparation (e.g. a value head added around the model) train fully too.
    known = {id(t.block) for t in attachment.targets} | {id(p) for p in attachment.extra_params}
    extra = list(attachment.extra_params) + [p for p in model.parameters() if p.requires_grad and id(p) not in known]
    optimizer = LosiaAdamW(
        attachment.targets,
        attachment.num_groups,
        attachment.config,
        extra_params=extra,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        generator=attachment.generator,
        layout=attachment.layout,
    )
    return optimizer


def attach_losia(
    model: nn.Module,
    config: LosiaConfig | None = None,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> LosiaAdamW:
    """Turn ``model`` into a LoSiA model and return its ready optimizer.

    Every parameter is frozen except the fp32 subnet blocks added to the target linears and the parameters matched
    by ``config.extra_trainable``. Groups are the decoder layers that hold targets, in order, and the output layer
    when ``0 < config.output_rank_factor < 1``, before them or after them as ``config.output_order`` says; at
    ``output_rank_factor == 1`` the output layer trains densely instead. Initial subnets are drawn at random from
    ``config.seed``.

    Use the result like any optimizer; pair it with :class:`~.lr_scheduler.LosiaLRScheduler` for the rewarm
    schedule. The model keeps its module names and ``state_dict`` keys; :func:`detach_losia` removes LoSiA again.

    Args:
        model: Any model with its decoder layers in an ``nn.ModuleList``.
        config: LoSiA hyper-parameters (defaults: ``LosiaConfig()``).
        lr: Base learning rate.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's (beta1, beta2).
        eps: AdamW's epsilon.
    """
    prepare_losia(model, config)
    return create_losia_optimizer(model, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


def detach_losia(model: nn.Module) -> nn.Module:
    """Remove LoSiA from ``model`` in place: blocks are written back, forwards and extra tensors removed.

    The model is afterwards a plain model holding the trained weights (all parameters stay frozen except those
    that were trained as ``extra_trainable``).
    """
    for module in model.modules():
        attachment = module.__dict__.pop(ATTACHMENT, None)
        if attachment is not None and attachment.tied_embedding is not None:
            attachment.tied_embedding.remove()
    for module in model.modules():
        if isinstance(module, nn.Linear) and hasattr(module, BLOCK):
            remove_subnet(module)
    return model


def _match_extra(
    model: nn.Module, patterns: tuple[str, ...], target_weights: set[int]
) -> list[tuple[str, nn.Parameter]]:
    if not patterns:
        return []
    matched = [(n, p) for n, p in model.named_parameters() if any(fnmatchcase(n, pat) for pat in patterns)]
    if not matched:
        raise LosiaConfigError(
            "extra_trainable",
            f"extra_trainable={list(patterns)} matches no parameter name of the model (names look like "
            f"{next(iter(dict(model.named_parameters())), '?')!r}).",
        )
    clash = [n for n, p in matched if id(p) in target_weights]
    if clash:
        raise LosiaConfigError(
            "extra_trainable",
            f"extra_trainable matches LoSiA target weights {clash[:3]}; these are trained through their subnet "
            "blocks. Narrow the patterns (e.g. '*norm*', '*.bias').",
        )
    return matched
