"""Model preparation for ``finetuning_type: losia`` (LLaMA-Factory's ``init_adapter`` step)."""

from __future__ import annotations

from typing import Any

import torch
from llamafactory.extras import logging
from torch import nn

from ..core import LosiaConfigError, prepare_losia
from .arguments import argument_error

logger = logging.get_logger("llamafactory.losia")  # under LLaMA-Factory's logger, so it prints like its own
pilora_logger = logging.get_logger("llamafactory.pilora")


def setup_losia(model: nn.Module, model_args: Any, finetuning_args: Any, is_trainable: bool) -> nn.Module:
    """Attach LoSiA's subnet blocks to ``model`` for training; leave it untouched for inference and export.

    A LoSiA run saves a full model, so chat, export and evaluation load it exactly like ``finetuning_type: full``.
    """
    if not is_trainable:
        return model
    if getattr(model, "quantization_method", None) is not None:
        raise ValueError(
            "finetuning_type: losia cannot train a quantized model (it writes the trained subnets into the backbone "
            "weights). Load the model unquantized."
        )
    config = finetuning_args.losia_config
    try:
        attachment = prepare_losia(model, config)
    except LosiaConfigError as err:
        raise ValueError(argument_error(err)) from None
    if not getattr(finetuning_args, "pure_bf16", False):
        for param in attachment.extra_params:
            param.data = param.data.to(
                torch.float32
            )  # fully trained extras get fp32 master weights, as in LLaMA-Factory
    _log_summary(attachment)
    return model


def _log_summary(attachment) -> None:
    config = attachment.config
    targets = attachment.targets
    blocks = sum(t.block.numel() for t in targets)
    extra = sum(p.numel() for p in attachment.extra_params)
    first = targets[0]
    logger.info_rank0(
        f"Fine-tuning method: LoSiA{'-Pro' if config.pro else ' (plain reference path)'} | p={config.rank_factor}, "
        f"T={config.time_slot}, p_o={config.output_rank_factor}, importance={config.importance}, mode={config.mode} | "
        f"{attachment.num_groups} groups ({attachment.layout.groups[0][0]} ... {attachment.layout.groups[-1][-1]}), "
        f"{len(targets)} target layers, e.g. {first.name} block {tuple(first.block.shape)} | subnet params "
        f"{blocks:,}, extra params {extra:,}"
    )


def setup_pilora(model: nn.Module, model_args: Any, finetuning_args: Any, is_trainable: bool) -> nn.Module:
    """Wrap the target linear layers with stage-1 PiLoRA for training.

    A PiLoRA run saves a standard LoRA adapter: chat, export and evaluation load it with ``finetuning_type: lora``
    and ``adapter_name_or_path``; loading with ``finetuning_type: pilora`` is refused with that advice.
    """
    from ..pilora import PiloraConfigError, attach_pilora
    from .pilora_arguments import pilora_argument_error

    if not is_trainable:
        raise ValueError(
            "A PiLoRA output is a standard LoRA adapter: load it with finetuning_type: lora and "
            "adapter_name_or_path: <the training output_dir>."
        )
    try:
        attachment = attach_pilora(model, finetuning_args.pilora_config)
    except PiloraConfigError as err:
        raise ValueError(pilora_argument_error(err)) from None
    config = attachment.config
    lora_params = attachment.num_trainable()
    pilora_logger.info_rank0(
        f"Fine-tuning method: PiLoRA | r={config.rank}, r'={config.supplementary_rank}, alpha={config.alpha}, "
        f"K={config.interval}, partition={config.partition}, init={config.init} | {len(attachment.layers)} target "
        f"layers ({', '.join(sorted({n.rsplit('.', 1)[-1] for n in attachment.layers}))}) | stage-1 LoRA params "
        f"{lora_params:,}"
    )
    return model
