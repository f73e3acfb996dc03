"""Trainer callback that runs PiLoRA's two stages inside a ``transformers.Trainer``."""

from __future__ import annotations

import json
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
LOG_FILE = "pilora_log.jsonl"


def reset_optimizer_state(optimizer: Any, params: list[torch.nn.Parameter]) -> None:
    """Drop the optimizer state of ``params`` (through accelerate's wrapper): their next step starts it afresh."""
    while hasattr(optimizer, "optimizer") and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    for param in params:
        optimizer.state.pop(param, None)


class PiloraCallback(TrainerCallback):
    """Scores neurons during stage 1 and switches to stage 2 (Algorithm 1) at the right optimizer step.

    * before every optimizer step (gradients summed over the step's micro-batches, reduced across ranks and
      clipped): a fused check for NaN/Inf in the adapter gradients. A bad step loses its gradients, so the optimizer
      skips the adapters (no update, no moment or step-count change), is not scored, and is counted in
      ``pilora_log.jsonl``; too many in a row stop the run. Otherwise, in stage 1, ``observe`` (every K-th step
      counts hits, Eqs. 7-8);
    * after the step that ends stage 1 (``pilora_probe_steps`` or ``pilora_probe_ratio`` of ``max_steps``): the masks
      are built, the dominant and supplementary LoRAs take over the adapter parameters (the same tensors, so DDP's
      wrapper and the optimizer stay valid; their Adam state is dropped), and the partition sizes go to the log and
      to ``pilora_partition.json``.
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
        if attachment is None:
            return
        if not attachment.gradients_finite():
            attachment.drop_gradients()
            if is_main_process(args):
                os.makedirs(args.output_dir, exist_ok=True)
                with open(os.path.join(args.output_dir, LOG_FILE), "a", encoding="utf-8") as handle:
                    record = {
                        "step": state.global_step + 1,
                        "event": "nonfinite",
                        "sources": ["adapter gradients"],
                        "skipped": attachment.nonfinite.skipped + 1,
                        "consecutive": attachment.nonfinite.consecutive + 1,
                    }
                    handle.write(json.dumps(record) + "\n")
            attachment.nonfinite.skip(state.global_step, ["adapter gradients"])
            return
        attachment.nonfinite.passed()
        if attachment.stage == 1:
            attachment.observe(state.global_step)  # global_step counts finished steps: the 0-based current one

    def on_step_end(self, args, state, control, **kwargs):
        attachment = find_pilora_attachment(kwargs.get("model"))
        if attachment is None or not attachment.switch_due(state.global_step - 1, state.max_steps):
            return
        attachment.enter_stage2()
        reset_optimizer_state(kwargs["optimizer"], attachment.trainable_parameters())
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
