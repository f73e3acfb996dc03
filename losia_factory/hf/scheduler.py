"""A :class:`LosiaLRScheduler` whose base curve is any of transformers' ``lr_scheduler_type`` schedules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..core import LosiaAdamW, LosiaLRScheduler

if TYPE_CHECKING:
    from transformers import TrainingArguments


def build_losia_scheduler(args: TrainingArguments, optimizer: LosiaAdamW, num_training_steps: int) -> LosiaLRScheduler:
    """The rewarming scheduler for a Trainer run: ``args.lr_scheduler_type`` as the base curve, times Eq. 8.

    The base curve is taken from ``transformers.get_scheduler`` (so ``cosine``, ``linear``, ``cosine_with_min_lr``,
    ``warmup_stable_decay``... behave exactly as without LoSiA); rewarming starts after
    ``args.get_warmup_steps(num_training_steps)`` steps.

    Raises:
        ValueError: when the scheduler type is not a per-step multiplier (e.g. ``reduce_lr_on_plateau``).
    """
    from transformers import get_scheduler

    warmup_steps = args.get_warmup_steps(num_training_steps)
    probe_param = torch.nn.Parameter(torch.zeros(1))
    probe = get_scheduler(
        args.lr_scheduler_type,
        optimizer=torch.optim.SGD([probe_param], lr=1.0),
        num_warmup_steps=warmup_steps,
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    if not isinstance(probe, LambdaLR):
        name = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
        raise ValueError(
            f"lr_scheduler_type={name!r} is not supported with LoSiA: its rewarm (Eq. 8) multiplies "
            "a per-step base curve. Use cosine, linear, constant_with_warmup, cosine_with_min_lr or "
            "warmup_stable_decay."
        )
    return LosiaLRScheduler(
        optimizer,
        num_training_steps=num_training_steps,
        warmup_steps=warmup_steps,
        lr_lambda=probe.lr_lambdas[0],
    )
