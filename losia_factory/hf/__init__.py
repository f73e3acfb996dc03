"""Glue between the LoSiA engine and ``transformers.Trainer``: the rewarm scheduler and a logging callback."""

from .callback import LosiaCallback, unwrap_optimizer
from .scheduler import build_losia_scheduler

__all__ = ["LosiaCallback", "build_losia_scheduler", "unwrap_optimizer"]
