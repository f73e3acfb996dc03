"""Which process of a run writes the files that exist once per run (logs, configs, analysis)."""

from __future__ import annotations

from typing import Any

import torch


def is_main_process(args: Any = None) -> bool:
    """Whether this is rank 0: of the initialized process group, else as ``TrainingArguments.process_index`` says.

    The process group is asked first because DeepSpeed and torchrun initialize it before the Trainer's arguments
    know their index; without either, a lone process is the main one.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return getattr(args, "process_index", 0) == 0
