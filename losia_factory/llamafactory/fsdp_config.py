"""Which FSDP settings LoSiA runs with: FSDP2 (``fully_shard``), parameters on the devices, loaded normally.

FSDP reaches the Trainer two ways: its own arguments (``fsdp: full_shard auto_wrap`` with ``fsdp_config: {version:
2, ...}``, what LLaMA-Factory's torchrun launch uses) or an accelerate config (``accelerate launch --config_file``,
which exports ``ACCELERATE_USE_FSDP`` and ``FSDP_*`` variables). Both are read here.
"""

from __future__ import annotations

import os
from typing import Any


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def fsdp_enabled(training_args: Any) -> bool:
    """True when the run will be sharded by FSDP (Trainer arguments or accelerate's FSDP config)."""
    return bool(getattr(training_args, "fsdp", None)) or _flag(os.environ.get("ACCELERATE_USE_FSDP", ""))


def fsdp_problems(training_args: Any) -> list[str]:
    """What LoSiA cannot run with in the FSDP settings of ``training_args`` (an empty list without FSDP)."""
    if not fsdp_enabled(training_args):
        return []
    from_args = bool(getattr(training_args, "fsdp", None))
    config = (getattr(training_args, "fsdp_config", None) or {}) if from_args else {}
    options = {str(getattr(o, "value", o)) for o in (training_args.fsdp or ())} if from_args else set()
    version = str(config.get("version", 1)) if from_args else os.environ.get("FSDP_VERSION", "1")
    offload = "offload" in options if from_args else _flag(os.environ.get("FSDP_OFFLOAD_PARAMS", ""))
    efficient = config.get("cpu_ram_efficient_loading", False) if from_args else None
    if efficient is None:
        efficient = os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    problems = []
    if version != "2":
        where = "fsdp_config: {version: 2}" if from_args else "fsdp_version: 2 in the accelerate config"
        problems.append(
            f"FSDP version {version} is not supported with finetuning_type: losia: LoSiA writes trained blocks into "
            f"the row shards of FSDP2 (fully_shard). Set {where}, or use DDP / DeepSpeed ZeRO."
        )
    if offload:
        where = "Remove `offload` from `fsdp:`" if from_args else "Set fsdp_offload_params: false"
        problems.append(
            "FSDP CPU offload is not supported with finetuning_type: losia (untested: LoSiA writes trained blocks "
            f"into the sharded weights after every step). {where}."
        )
    if _flag(efficient):
        where = "fsdp_config" if from_args else "the accelerate config"
        problems.append(
            "cpu_ram_efficient_loading is not supported with finetuning_type: losia: it reloads the model from its "
            f"state dict, which does not hold LoSiA's blocks. Set cpu_ram_efficient_loading: false in {where}."
        )
    return problems
