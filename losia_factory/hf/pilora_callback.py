"""Trainer callback that runs PiLoRA's two stages inside a ``transformers.Trainer``."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import TrainerCallback

from ..fileio import write_json_atomic
from ..pilora.model import find_pilora_attachment
from .ranks import is_main_process

logger = logging.getLogger("llamafactory.pilora")
PARTITION_FILE = "pilora_partition.json"


def swap_optimizer_params(optimizer: Any, old: list[torch.nn.Parameter], new: list[torch.nn.Parameter]) -> None:
    """Replace ``old`` parameters by ``new`` ones in ``optimizer`` (through accelerate's wrapper), dropping state.

    The new parameters join the param group that held the first old one (LLaMA-Factory's and transformers' default
    optimizers put the LoRA matrices in the weight-decay group), so learning rate and schedule carry on.
    """
    while hasattr(optimizer, "optimizer") and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    old_ids = {id(p) for p in old}
    target = next((g for g in optimizer.param_groups if any(id(p) in old_ids for p in g["params"])), None)
    if target is None:
        raise RuntimeError("the optimizer holds none of PiLoRA's stage-1 parameters")
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in old_ids]
    target["params"].extend(new)
    for param in old:
        optimizer.state.pop(param, None)


class PiloraCallback(TrainerCallback):
    """Scores neurons during stage 1 and switches to stage 2 (Algorithm 1) at the right optimizer step.

    * before every optimizer step of stage 1 (gradients summed over the step's micro-batches and clipped):
      ``observe`` (every K-th step counts hits, Eqs. 7-8);
    * after the step that ends stage 1 (``pilora_probe_steps`` or ``pilora_probe_ratio`` of ``max_steps``): the masks
      are built, the dominant and supplementary LoRAs replace the stage-1 LoRA in the model and in the optimizer, and
      the partition sizes go to the log and to ``pilora_partition.json``.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        attachment = find_pilora_attachment(kwargs.get("model"))
        if attachment is not None and attachment.config.probe_length(state.max_steps) >= state.max_steps:
            raise ValueError(
                f"PiLoRA's stage 1 ({attachment.config.probe_length(state.max_steps)} steps) would take the whole run "
                f"({state.max_steps} steps), so stage 2 would never start. Lower pilora_probe_steps or "
                "pilora_probe_ratio, or train longer."
            )

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        attachment = find_pilora_attachment(kwargs.get("model"))
        if attachment is not None and attachment.stage == 1:
            attachment.observe(state.global_step)  # global_step counts finished steps: the 0-based current one

    def on_step_end(self, args, state, control, **kwargs):
        attachment = find_pilora_attachment(kwargs.get("model"))
        if attachment is None or not attachment.switch_due(state.global_step - 1, state.max_steps):
            return
        old = attachment.trainable_parameters()
        attachment.enter_stage2()
        swap_optimizer_params(kwargs["optimizer"], old, attachment.trainable_parameters())
        sizes = attachment.partition_sizes()
        dominant = sum(d for d, _ in sizes.values())
        neurons = sum(m for _, m in sizes.values())
        logger.info(
            f"PiLoRA stage 2 from step {state.global_step + 1}: {dominant:,} of {neurons:,} output neurons dominant "
            f"({dominant / neurons:.1%}), trainable params {attachment.num_trainable():,}"
        )
        if is_main_process(args):
            write_json_atomic(
                os.path.join(args.output_dir, PARTITION_FILE),
                {
                    "switch_step": state.global_step,
                    "trainable": attachment.num_trainable(),
                    "layers": {name: {"dominant": d, "neurons": m} for name, (d, m) in sizes.items()},
                },
            )
