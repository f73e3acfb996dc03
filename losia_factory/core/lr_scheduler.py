"""Learning-rate schedule of LoSiA: a base schedule times each group's rewarm factor (paper Eq. 8)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from .optimizer import LosiaAdamW

BASE_SCHEDULES = ("cosine", "linear", "constant")


def base_lr_lambda(
    kind: str, num_training_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """Multiplier of the base learning rate at a 0-based step: linear warm-up, then cosine/linear decay or constant.

    The warm-up factor is ``step / warmup_steps`` and the decay reaches ``min_lr_ratio`` at ``num_training_steps``
    (the same curves as ``transformers``' ``get_{cosine,linear,constant}_schedule_with_warmup`` when
    ``min_lr_ratio`` is 0).
    """
    if kind not in BASE_SCHEDULES:
        raise ValueError(f"kind must be one of {BASE_SCHEDULES}, got {kind!r}.")
    if num_training_steps < 1:
        raise ValueError(f"num_training_steps must be >= 1, got {num_training_steps}.")
    if not 0 <= warmup_steps <= num_training_steps:
        raise ValueError(f"warmup_steps must be in [0, num_training_steps], got {warmup_steps}.")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}.")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, num_training_steps - warmup_steps))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return factor


class LosiaLRScheduler(LRScheduler):
    """Sets each param group's learning rate to ``initial_lr * base(step) * rewarm(step, group)``.

    ``base`` is a warm-up + decay curve (:func:`base_lr_lambda`) or any ``lr_lambda(step) -> float``; ``rewarm`` is
    :meth:`LosiaSchedule.rewarm_factor` with this scheduler's ``warmup_steps``. The extra fully-trained parameters
    (``losia_group`` None) follow the base curve only. Step it once after every optimizer step, as usual.

    Args:
        optimizer: The :class:`LosiaAdamW` built by ``attach_losia``.
        num_training_steps: Total optimizer steps (for the decay).
        warmup_steps: Warm-up steps of the base curve; rewarming starts after them.
        kind: ``"cosine"``, ``"linear"`` or ``"constant"`` (ignored when ``lr_lambda`` is given).
        min_lr_ratio: Floor of the decay as a fraction of the base learning rate.
        lr_lambda: Optional custom base curve; it is not saved in ``state_dict`` (pass it again when resuming).
        last_epoch: As in ``torch.optim.lr_scheduler``.
    """

    def __init__(
        self,
        optimizer: LosiaAdamW,
        num_training_steps: int,
        warmup_steps: int = 0,
        kind: str = "cosine",
        min_lr_ratio: float = 0.0,
        lr_lambda: Callable[[int], float] | None = None,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, LosiaAdamW):
            raise TypeError(
                f"LosiaLRScheduler needs the LosiaAdamW from attach_losia, got {type(optimizer).__name__}."
            )
        self.kind = kind
        self.num_training_steps = num_training_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.custom_lambda = lr_lambda is not None
        self.lr_lambda = lr_lambda or base_lr_lambda(kind, num_training_steps, warmup_steps, min_lr_ratio)
        self.rewarm = replace(optimizer.schedule, warmup_steps=warmup_steps)
        optimizer.register_rewarm_scheduler()
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:  # LRScheduler's type; LoSiA's rates are floats
        step = self.last_epoch
        base = self.lr_lambda(step)
        lrs = []
        for group in self.optimizer.param_groups:
            factor = base
            if group.get("losia_group") is not None:
                factor *= self.rewarm.rewarm_factor(step, group["losia_group"])
            lrs.append(group["initial_lr"] * factor)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        # Plain values only (checkpoints are loaded with torch.load(weights_only=True)); the callables and the
        # rewarm schedule are rebuilt from them.
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambda", "rewarm")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        custom = self.custom_lambda
        self.__dict__.update(state_dict)
        self.custom_lambda = custom
        optimizer: LosiaAdamW = self.optimizer  # type: ignore[assignment]  # set by __init__ from a LosiaAdamW
        self.rewarm = replace(optimizer.schedule, warmup_steps=self.warmup_steps)
        if not custom:
            self.lr_lambda = base_lr_lambda(self.kind, self.num_training_steps, self.warmup_steps, self.min_lr_ratio)
