"""A :class:`LosiaLRScheduler` whose base curve is any of transformers' ``lr_scheduler_type`` schedules."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..core import LosiaAdamW, LosiaLRScheduler

if TYPE_CHECKING:
    from transformers import TrainingArguments


def base_curve(
    scheduler_type: Any, num_warmup_steps: int, num_training_steps: int, scheduler_kwargs: dict | None = None
) -> Callable[[int], float]:
    """The per-step multiplier of transformers' ``scheduler_type``, taken from a throwaway scheduler.

    Raises:
        ValueError: when the scheduler type is not a per-step multiplier (e.g. ``reduce_lr_on_plateau``), which the
            rewarm (paper Eq. 8) cannot multiply.
    """
    from transformers import get_scheduler

    probe = get_scheduler(
        scheduler_type,
        optimizer=torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=scheduler_kwargs,
    )
    if not isinstance(probe, LambdaLR):
        name = getattr(scheduler_type, "value", scheduler_type)
        raise ValueError(
            f"lr_scheduler_type: {name} is not supported with LoSiA: the rewarm (paper Eq. 8) multiplies a per-step "
            "base curve. Use cosine, linear, constant_with_warmup, cosine_with_min_lr or warmup_stable_decay."
        )
    return probe.lr_lambdas[0]


def build_losia_scheduler(args: TrainingArguments, optimizer: LosiaAdamW, num_training_steps: int) -> LosiaLRScheduler:
    """The rewarming scheduler for a Trainer run: ``args.lr_scheduler_type`` as the base curve, times Eq. 8.

    The base curve comes from ``transformers.get_scheduler`` (so ``cosine``, ``linear``, ``cosine_with_min_lr``,
    ``warmup_stable_decay``... behave exactly as without LoSiA); rewarming starts after
    ``args.get_warmup_steps(num_training_steps)`` steps.
    """
    warmup_steps = args.get_warmup_steps(num_training_steps)
    curve = base_curve(args.lr_scheduler_type, warmup_steps, num_training_steps, args.lr_scheduler_kwargs)
    return LosiaLRScheduler(
        optimizer, num_training_steps=num_training_steps, warmup_steps=warmup_steps, lr_lambda=curve
    )
