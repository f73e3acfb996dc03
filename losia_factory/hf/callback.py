"""Trainer callback that makes LoSiA's timeline visible: per-group learning rates, reselections, saved config."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from ..core import LosiaAdamW, SubnetTarget
from ..core.deepspeed_masters import bind_deepspeed
from ..core.partitioned import full_shape
from ..fileio import write_json_atomic
from .fsdp_state import is_fsdp_sharded, load_losia_state, save_losia_state
from .ranks import is_main_process

LOG_FILE = "losia_log.jsonl"
CONFIG_FILE = "losia_config.json"
SUBNETS_FILE = "losia_subnets.jsonl"


def unwrap_optimizer(optimizer: Any) -> LosiaAdamW | None:
    """The :class:`LosiaAdamW` inside accelerate/DeepSpeed optimizer wrappers, or None."""
    seen = 0
    while optimizer is not None and not isinstance(optimizer, LosiaAdamW) and seen < 8:
        optimizer = getattr(optimizer, "optimizer", None)
        seen += 1
    return optimizer if isinstance(optimizer, LosiaAdamW) else None


class LosiaCallback(TrainerCallback):
    """Logs LoSiA's per-group learning rates and reselections; saves the LoSiA config next to every checkpoint.

    * every logging step: ``losia_lr_min`` (the lowest group learning rate, the one rewarming) and
      ``losia_rewarm_group`` are added to the trainer log, and one line with the learning rate of every group during
      that optimizer step and the measuring group(s) is appended to ``<output_dir>/losia_log.jsonl``;
    * every optimizer step, with TensorBoard in ``report_to``: each group's rate as ``losia/lr/<group>``;
    * every reselection: a ``{"event": "reselect"}`` line in ``losia_log.jsonl``, whatever the logging interval;
    * the subnets in ``losia_subnets.jsonl`` (read by ``losia-factory analyze``): at the start of training every
      target's shape and indices, at every reselection the new indices of the reselected groups' targets, and a last
      line when training ends (see :func:`subnet_record`);
    * every step skipped for NaN/Inf gradients: a ``{"event": "nonfinite"}`` line with what held them and the
      running count of skipped steps (``losia_nonfinite_skipped`` in the trainer log too, once there is one);
    * ``losia_config.json`` (the LoSiA settings and the layer groups) is saved in each checkpoint and the output dir.

    Under DeepSpeed ZeRO 1-3 it also drives the LoSiA part of each step: at the start of training it hands the blocks'
    fp32 masters to the engine (:func:`~losia_factory.core.deepspeed_masters.bind_deepspeed`), and after every
    optimizer step it calls :meth:`LosiaAdamW.finish_step` on every rank (importance, write-back, reselection).
    """

    def __init__(self) -> None:
        self._writer = None
        self._lrs: dict[str, float] = {}
        self._measuring: list[str] = []

    # -- helpers ------------------------------------------------------------------------------------------------

    def _optimizer(self, kwargs: dict[str, Any]) -> LosiaAdamW | None:
        return unwrap_optimizer(kwargs.get("optimizer"))

    @staticmethod
    def _group_lrs(optimizer: LosiaAdamW) -> dict[str, float]:
        return {g["name"]: float(g["lr"]) for g in optimizer.param_groups}

    def _append(self, args, record: dict[str, Any], file: str = LOG_FILE) -> None:
        if not is_main_process(args):
            return
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, file), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _tensorboard(self, args):
        if self._writer is None and is_main_process(args) and "tensorboard" in (args.report_to or []):
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=os.path.join(args.logging_dir or args.output_dir, "losia"))
        return self._writer

    # -- events -------------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        optimizer = self._optimizer(kwargs)
        if optimizer is None:
            return
        if args.deepspeed and optimizer.engine_masters is None:
            bind_deepspeed(optimizer)
        if optimizer.losia_state_pending:  # FSDP's optimizer checkpoint does not carry it (see .fsdp_state)
            load_losia_state(optimizer, _resumed_checkpoint(args))
            optimizer.losia_state_pending = False
        if is_main_process(args):
            # A resumed run has its checkpoint's indices by now (the Trainer loads the optimizer state first).
            record = subnet_record(optimizer, "start", optimizer.global_step, optimizer.targets)
            record["base_model"] = _base_model(kwargs.get("model"))
            self._append(args, record, SUBNETS_FILE)

    def on_step_begin(self, args, state, control, **kwargs):
        optimizer = self._optimizer(kwargs)
        if optimizer is None:
            return
        # The rates and measuring groups of the optimizer step about to run (the scheduler moves them after it).
        self._lrs = self._group_lrs(optimizer)
        self._measuring = [optimizer.group_name(g) for g in optimizer.schedule.scoring_groups(optimizer.global_step)]

    def on_step_end(self, args, state, control, **kwargs):
        optimizer = self._optimizer(kwargs)
        if optimizer is None:
            return
        if optimizer.engine_masters is not None:
            optimizer.finish_step()  # the engine has stepped and gathered the blocks back into the model
        step = state.global_step  # 1-based count of optimizer steps, as in the trainer log
        if args.logging_steps and step % max(1, int(args.logging_steps)) == 0:
            self._append(args, {"step": step, "lr": self._lrs, "measuring": self._measuring})
        if optimizer.last_nonfinite:
            self._append(
                args,
                {
                    "step": step,
                    "event": "nonfinite",
                    "sources": list(optimizer.last_nonfinite),
                    "skipped": optimizer.nonfinite.skipped,
                    "consecutive": optimizer.nonfinite.consecutive,
                },
            )
        if optimizer.last_reselected:
            names = [optimizer.group_name(g) for g in optimizer.last_reselected]
            self._append(args, {"step": step, "event": "reselect", "groups": names})
            if is_main_process(args):  # every rank holds the same indices; one writes them
                moved = [t for g in optimizer.last_reselected for t in optimizer.group_targets[g]]
                self._append(args, subnet_record(optimizer, "reselect", step, moved), SUBNETS_FILE)
        writer = self._tensorboard(args)
        if writer is not None:
            for name, lr in self._lrs.items():
                writer.add_scalar(f"losia/lr/{name}", lr, step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        optimizer = self._optimizer(kwargs)
        if optimizer is None or logs is None or "loss" not in logs:
            return
        groups = [g for g in optimizer.param_groups if g["losia_group"] is not None]
        lowest = min(groups, key=lambda g: g["lr"])
        extra: dict[str, Any] = {"losia_lr_min": float(lowest["lr"]), "losia_rewarm_group": lowest["name"]}
        if optimizer.nonfinite.skipped:
            extra["losia_nonfinite_skipped"] = optimizer.nonfinite.skipped
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_save(self, args, state, control, **kwargs):
        optimizer = self._optimizer(kwargs)
        if optimizer is None:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if is_fsdp_sharded(optimizer):  # written before losia_config.json, which marks the checkpoint complete
            save_losia_state(optimizer, folder, is_main_process(args))
        if is_main_process(args) and os.path.isdir(folder):
            write_losia_config(optimizer, folder)

    def on_train_end(self, args, state, control, **kwargs):
        optimizer = self._optimizer(kwargs)
        if optimizer is not None and is_main_process(args):
            os.makedirs(args.output_dir, exist_ok=True)
            write_losia_config(optimizer, args.output_dir)
            self._append(args, {"step": optimizer.global_step, "event": "end"}, SUBNETS_FILE)
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _resumed_checkpoint(args) -> str:
    """The checkpoint folder the Trainer has just loaded an optimizer state from (an FSDP run being resumed).

    LLaMA-Factory sets ``resume_from_checkpoint`` to that folder before training (also for ``true``); a script that
    passes the folder to ``trainer.train(resume_from_checkpoint=...)`` only must set the argument too.
    """
    resume = getattr(args, "resume_from_checkpoint", None)
    if isinstance(resume, str) and resume.lower() not in ("true", "false"):
        return resume
    if resume is True or (isinstance(resume, str) and resume.lower() == "true"):
        from transformers.trainer_utils import get_last_checkpoint

        folder = get_last_checkpoint(args.output_dir)  # what trainer.train(resume_from_checkpoint=True) loads
        if folder is not None:
            return folder
    raise RuntimeError(
        "This FSDP run restored an optimizer checkpoint, but TrainingArguments.resume_from_checkpoint does not name "
        "its folder, where LoSiA's state (losia_state.pt: subnet indices, masters, importance) is. Set "
        "resume_from_checkpoint to the checkpoint folder in the TrainingArguments as well."
    )


def write_losia_config(optimizer: LosiaAdamW, folder: str) -> None:
    """Write ``losia_config.json``: the settings, the groups and the trainable counts of a LoSiA run."""
    layout = optimizer.layout
    payload = {
        "config": optimizer.config.to_dict(),
        "step": optimizer.global_step,
        "groups": [g["name"] for g in optimizer.param_groups if g["losia_group"] is not None],
        "targets": [t.name for t in optimizer.targets],
        # The names are known only when attach_losia built the optimizer; null says "unknown", not "none".
        "extra_trainable": list(layout.extra_trainable) if layout is not None else None,
        "trainable": optimizer.num_trainable(),
    }
    write_json_atomic(os.path.join(folder, CONFIG_FILE), payload)


def subnet_record(optimizer: LosiaAdamW, event: str, step: int, targets: Sequence[SubnetTarget]) -> dict[str, Any]:
    """One line of ``losia_subnets.jsonl``: the indices of ``targets`` in effect from optimizer step ``step + 1`` on.

    ``step`` counts finished optimizer steps (1-based like the trainer log, 0 before the first). Each target is
    ``{"name", "group", "out_idx", "in_idx"}`` with sorted index lists (``in_idx`` null when the block spans all
    input neurons, as for the output layer); a ``"start"`` line adds ``"shape": [out_features, in_features]``.
    Plain integer lists keep the file readable; a 7B model's start line is about 2 MB at p = 1/8.
    """
    entries = []
    for target in targets:
        entry: dict[str, Any] = {"name": target.name, "group": target.group}
        if event == "start":
            entry["shape"] = list(full_shape(target.weight))  # ZeRO-3 keeps only a slice of the weight
        entry["out_idx"] = target.out_idx.tolist()
        entry["in_idx"] = None if target.in_idx is None else target.in_idx.tolist()
        entries.append(entry)
    return {
        "step": int(step),
        "event": event,
        "groups": {str(g): optimizer.group_name(g) for g in sorted({t.group for t in targets})},
        "targets": entries,
    }


def _base_model(model: Any) -> dict[str, str | None] | None:
    """The model the run started from, as it was loaded (a hub id or a folder), and its absolute path if a folder."""
    name = getattr(model, "name_or_path", None) if model is not None else None
    if not name:
        return None
    return {"name_or_path": str(name), "path": os.path.abspath(name) if os.path.isdir(name) else None}
