"""DeepSpeed ZeRO-1/2 configs that LoSiA runs with (the files in recipes/deepspeed/ and the web UI's)."""

from __future__ import annotations

import json
import os
from typing import Any

CONFIG_NAME = "ds_z{stage}_losia_config.json"


def zero_config(stage: int) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO stage 1 or 2 whose "auto" values the Trainer fills in.

    No ``optimizer`` or ``scheduler`` section (the Trainer hands LoSiA's to DeepSpeed) and ``round_robin_gradients``
    off: DeepSpeed <= 0.18 reorders its flat buffers for it without updating the fp32 accessors LoSiA relies on.
    """
    if stage not in (1, 2):
        raise ValueError(f"LoSiA runs with DeepSpeed ZeRO stage 1 or 2, not {stage}.")
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": False},
        "zero_optimization": {
            "stage": stage,
            "allgather_partitions": True,
            "allgather_bucket_size": 500_000_000,
            "overlap_comm": False,
            "reduce_scatter": True,
            "reduce_bucket_size": 500_000_000,
            "contiguous_gradients": True,
            "round_robin_gradients": False,
        },
    }


def write_zero_config(folder: str, stage: int) -> str:
    """Write :func:`zero_config` as ``ds_z{stage}_losia_config.json`` in ``folder``; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, CONFIG_NAME.format(stage=stage))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(zero_config(stage), handle, indent=2)
        handle.write("\n")
    return path
