"""DeepSpeed ZeRO-1/2/3 configs that LoSiA runs with (the files in recipes/deepspeed/ and the web UI's)."""

from __future__ import annotations

import os
from typing import Any

from ..fileio import write_json_atomic

CONFIG_NAME = "ds_z{stage}_{offload}losia_config.json"
_COMMON: dict[str, Any] = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_allow_untested_optimizer": True,
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": False},
}


def zero_config(stage: int, offload: bool = False) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO stage 1, 2 or 3 whose "auto" values the Trainer fills in.

    No ``optimizer`` or ``scheduler`` section (the Trainer hands LoSiA's to DeepSpeed) and ``round_robin_gradients``
    off: DeepSpeed <= 0.18 reorders its flat buffers for it without updating the fp32 accessors LoSiA relies on.
    Stage 3 saves the gathered 16-bit weights, so the output is a full model under the base model's tensor names.

    Args:
        stage: The ZeRO stage, 1, 2 or 3.
        offload: Keep the optimizer's fp32 partitions (and under stage 3 the weight slices) in CPU memory, with
            ``zero_force_ds_cpu_optimizer`` off so that DeepSpeed keeps LoSiA's optimizer.
    """
    if stage not in (1, 2, 3):
        raise ValueError(f"LoSiA runs with DeepSpeed ZeRO stage 1, 2 or 3, not {stage}.")
    if stage == 3:
        section = dict(ZERO3_SECTION)
    else:
        section = {
            "stage": stage,
            "allgather_partitions": True,
            "allgather_bucket_size": 500_000_000,
            "overlap_comm": False,
            "reduce_scatter": True,
            "reduce_bucket_size": 500_000_000,
            "contiguous_gradients": True,
            "round_robin_gradients": False,
        }
    if not offload:
        return {**_COMMON, "zero_optimization": section}
    section["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        section["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {**_COMMON, "zero_force_ds_cpu_optimizer": False, "zero_optimization": section}


# The stage-3 section of recipes/deepspeed/ds_z3_config.json. Prefetching and persistence keep their defaults;
# LoSiA needs no particular value of them.
ZERO3_SECTION: dict[str, Any] = {
    "stage": 3,
    "overlap_comm": False,
    "contiguous_gradients": True,
    "reduce_bucket_size": "auto",
    "stage3_prefetch_bucket_size": "auto",
    "stage3_param_persistence_threshold": "auto",
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000,
    "stage3_gather_16bit_weights_on_model_save": True,
}


def write_zero_config(folder: str, stage: int, offload: bool = False) -> str:
    """Write :func:`zero_config` as ``ds_z{stage}_[offload_]losia_config.json`` in ``folder``; returns the path."""
    path = os.path.join(folder, CONFIG_NAME.format(stage=stage, offload="offload_" if offload else ""))
    write_json_atomic(path, zero_config(stage, offload))
    return path


def deepspeed_problems(training_args: Any) -> list[str]:
    """What in the DeepSpeed config LoSiA cannot run with (ZeRO-1/2/3 with the Trainer's optimizer is supported)."""
    config = getattr(training_args, "hf_deepspeed_config", None)
    if config is None:
        return []
    problems = []
    stage = config.get_value("zero_optimization.stage", 0)
    if stage == 0:
        problems.append(
            "DeepSpeed without ZeRO (stage 0) is not tested with finetuning_type: losia. Use ZeRO stage 1, 2 or 3 "
            "(recipes/deepspeed/ds_z2_config.json), or DDP: remove `deepspeed:` and launch with FORCE_TORCHRUN=1."
        )
    if stage == 3:
        problems += _zero3_problems(config)
    problems += _offload_problems(config)
    for key, name in (("optimizer", "an optimizer"), ("scheduler", "a scheduler")):
        if config.get_value(key) is not None:
            problems.append(
                f"The DeepSpeed config defines {name} (`{key}` section), which would replace LoSiA's. Remove the "
                f"`{key}` section: the Trainer passes LoSiA's optimizer and rewarm scheduler to DeepSpeed."
            )
    if config.is_true("zero_optimization.round_robin_gradients"):
        problems.append(
            'DeepSpeed "round_robin_gradients": true reorders ZeRO\'s flat buffers without updating the mapping that '
            "DeepSpeed's safe_get/set_full_fp32_param accessors use (DeepSpeed <= 0.18), so LoSiA's reselection would "
            'read and write wrong values. Set "round_robin_gradients": false (recipes/deepspeed/ds_z2_config.json).'
        )
    if config.is_true("zero_optimization.elastic_checkpoint") or config.is_true("checkpoint.load_universal"):
        problems.append(
            "DeepSpeed elastic or universal checkpoints do not carry LoSiA's state (subnet indices, importance). "
            "Remove zero_optimization.elastic_checkpoint / checkpoint.load_universal."
        )
    return problems


def _offload_problems(config: Any) -> list[str]:
    """Offload to CPU memory runs (the fp32 accessors and the slice write-back reach CPU tensors); NVMe does not."""
    problems = []
    devices = {}
    for key in ("offload_optimizer", "offload_param"):
        section = config.get_value(f"zero_optimization.{key}")
        device = section.get("device", "none") if isinstance(section, dict) else "none"
        devices[key] = "none" if device is None else device
        if devices[key] not in ("none", "cpu"):
            problems.append(
                f'DeepSpeed {key} to "{device}" is not supported with finetuning_type: losia: LoSiA reads and writes '
                'the swapped tensors between steps (subnet masters, weight slices). Use "device": "cpu" or remove '
                f"{key}."
            )
    if devices["offload_optimizer"] != "none" and config.get_value("zero_force_ds_cpu_optimizer", True):
        problems.append(
            "DeepSpeed offload_optimizer with the default zero_force_ds_cpu_optimizer would replace LoSiA's optimizer "
            'by DeepSpeedCPUAdam (no importance, no reselection). Add "zero_force_ds_cpu_optimizer": false to the '
            "DeepSpeed config (recipes/deepspeed/ds_z3_offload_config.json): LoSiA's AdamW then steps the subnets' "
            "fp32 partitions in CPU memory, a few percent of full fine-tuning's optimizer work."
        )
    return problems


def _zero3_problems(config: Any) -> list[str]:
    """Stage-3 features that change where a weight's slice lives, which LoSiA's block write-back relies on."""
    problems = []
    hpz = config.get_value("zero_optimization.zero_hpz_partition_size", 1)
    if hpz not in (None, 1):
        problems.append(
            "DeepSpeed ZeRO++ hierarchical partitioning (zero_hpz_partition_size > 1) keeps secondary weight copies "
            "that LoSiA's write-back does not update. Remove zero_hpz_partition_size."
        )
    if config.is_true("zero_optimization.zero_quantized_weights") or config.is_true(
        "zero_optimization.zero_quantized_nontrainable_weights"
    ):
        problems.append(
            "DeepSpeed ZeRO++ quantized weights change the stored weight values LoSiA writes its subnets into. Remove "
            "zero_quantized_weights / zero_quantized_nontrainable_weights."
        )
    return problems
