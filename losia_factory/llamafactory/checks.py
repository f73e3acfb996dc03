"""Parse-time refusals: settings LoSiA cannot combine with, reported before any model is loaded."""

from __future__ import annotations

import os
from typing import Any

from .arguments import METHOD

SUPPORTED_STAGES = ("pt", "sft", "rm", "dpo", "kto")
OPTIMIZER_FLAGS = {
    "use_galore": "GaLore",
    "use_apollo": "APOLLO",
    "use_badam": "BAdam",
    "use_adam_mini": "Adam-mini",
    "use_muon": "Muon",
}


def check_stage(finetuning_args: Any) -> None:
    """Refuse training stages LoSiA cannot run (checked while the fine-tuning arguments are built)."""
    if finetuning_args.stage not in SUPPORTED_STAGES:
        raise ValueError(
            f"stage: {finetuning_args.stage} is not supported with finetuning_type: losia (its trainer builds its own "
            f"optimizer). Use one of {', '.join(SUPPORTED_STAGES)}."
        )
    if finetuning_args.stage == "rm" and finetuning_args.losia_output_rank_factor > 0:
        raise ValueError(
            "stage: rm scores with a value head, so the output layer (lm_head) gets no gradient: set "
            "losia_output_rank_factor: 0."
        )


def check_pilora_stage(finetuning_args: Any) -> None:
    """Refuse training stages PiLoRA has not been tested with (checked while the fine-tuning arguments are built)."""
    from .pilora_arguments import SUPPORTED_STAGES as PILORA_STAGES

    if finetuning_args.stage not in PILORA_STAGES:
        raise ValueError(
            f"stage: {finetuning_args.stage} is not supported with finetuning_type: pilora. Use one of "
            f"{', '.join(PILORA_STAGES)}."
        )


def check_pilora_train_args(model_args: Any, training_args: Any, finetuning_args: Any) -> None:
    """Raise ``ValueError`` for every setting ``finetuning_type: pilora`` does not support, naming it and the fix."""
    problems = []
    world_size = int(getattr(training_args, "world_size", 1) or 1)
    if world_size > 1 or training_args.deepspeed or getattr(training_args, "fsdp", None):
        problems.append(
            "finetuning_type: pilora runs on one process: it replaces its trainable parameters when stage 2 starts, "
            "which DDP, DeepSpeed and FSDP fix when they wrap the model. Launch one process without `deepspeed:` / "
            "`fsdp:` (CUDA_VISIBLE_DEVICES=0)."
        )
    if training_args.resume_from_checkpoint:
        problems.append(
            f"resume_from_checkpoint ({training_args.resume_from_checkpoint}) is not supported with finetuning_type: "
            "pilora yet. Start a new run (overwrite_output_dir: true, or another output_dir)."
        )
    if model_args.quantization_bit is not None:
        problems.append(
            f"quantization_bit: {model_args.quantization_bit} is not supported with finetuning_type: pilora."
        )
    if getattr(model_args, "use_unsloth", False):
        problems.append("use_unsloth is not supported with finetuning_type: pilora. Remove use_unsloth.")
    if model_args.adapter_name_or_path:
        problems.append(
            "adapter_name_or_path cannot be trained further with finetuning_type: pilora. Load a PiLoRA adapter "
            "with finetuning_type: lora (it is a standard LoRA adapter)."
        )
    for flag, name in OPTIMIZER_FLAGS.items():
        if getattr(finetuning_args, flag, False):
            problems.append(f"{flag}: {name} cannot be combined with finetuning_type: pilora.")
    optim = getattr(training_args.optim, "value", training_args.optim)
    if not optim.startswith("adamw_torch"):
        problems.append(
            f"optim: {optim} is not tested with finetuning_type: pilora (its parameters change at stage 2). Use "
            "adamw_torch."
        )
    if problems:
        raise ValueError("Unsupported settings for finetuning_type: pilora:\n  - " + "\n  - ".join(problems))


def check_train_args(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any) -> None:
    """Raise ``ValueError`` for every setting ``finetuning_type: losia`` does not support, naming it and the fix."""
    from .pilora_arguments import PILORA_METHOD

    if finetuning_args.finetuning_type == PILORA_METHOD:
        check_pilora_train_args(model_args, training_args, finetuning_args)
        return
    if finetuning_args.finetuning_type != METHOD:
        return
    problems = []
    if training_args.deepspeed:
        problems += _deepspeed_problems(training_args)
    if getattr(training_args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        problems.append(
            "FSDP is not supported with finetuning_type: losia (it shards the backbone weights LoSiA writes the "
            "trained subnets into). Remove `fsdp:` / the FSDP accelerate config; use DDP (FORCE_TORCHRUN=1) or "
            "DeepSpeed ZeRO-1/2 (deepspeed: recipes/deepspeed/ds_z2_config.json)."
        )
    if model_args.quantization_bit is not None:
        problems.append(
            f"quantization_bit: {model_args.quantization_bit} cannot be used with finetuning_type: losia, which "
            "writes the trained subnets into the backbone weights. Remove quantization_bit (QLoRA needs "
            "finetuning_type: lora)."
        )
    if getattr(model_args, "use_unsloth", False):
        problems.append("use_unsloth is not supported with finetuning_type: losia. Remove use_unsloth.")
    if training_args.fp16:
        problems.append(
            "fp16: true (loss scaling) is not supported with finetuning_type: losia: scaled gradients would distort "
            "the importance scores and skipped steps would break the reselection schedule. Use bf16: true, or "
            "neither for float32."
        )
    for flag, name in OPTIMIZER_FLAGS.items():
        if getattr(finetuning_args, flag, False):
            problems.append(
                f"{flag}: {name} replaces the optimizer and cannot be combined with finetuning_type: losia."
            )
    if getattr(finetuning_args, "use_llama_pro", False):
        problems.append("use_llama_pro cannot be combined with finetuning_type: losia.")
    optim = getattr(training_args.optim, "value", training_args.optim)
    if not optim.startswith("adamw"):
        problems.append(
            f"optim: {optim} would be ignored: finetuning_type: losia trains the subnets with its own AdamW. Remove "
            "optim or set adamw_torch."
        )
    scheduler_problem = _scheduler_problem(training_args)
    if scheduler_problem:
        problems.append(scheduler_problem)
    if problems:
        raise ValueError("Unsupported settings for finetuning_type: losia:\n  - " + "\n  - ".join(problems))


def _deepspeed_problems(training_args: Any) -> list[str]:
    """What in the DeepSpeed config LoSiA cannot run with (ZeRO-1/2 with the Trainer's optimizer is supported)."""
    config = getattr(training_args, "hf_deepspeed_config", None)
    if config is None:
        return []
    problems = []
    stage = config.get_value("zero_optimization.stage", 0)
    if stage == 0:
        problems.append(
            "DeepSpeed without ZeRO (stage 0) is not tested with finetuning_type: losia. Use ZeRO stage 1 or 2 "
            "(recipes/deepspeed/ds_z2_config.json), or DDP: remove `deepspeed:` and launch with FORCE_TORCHRUN=1."
        )
    if stage == 3:
        problems.append(
            "DeepSpeed ZeRO stage 3 partitions the backbone weights, which finetuning_type: losia writes the trained "
            "subnets into after every step. Use ZeRO stage 1 or 2 (recipes/deepspeed/ds_z2_config.json)."
        )
    for key in ("zero_optimization.offload_optimizer", "zero_optimization.offload_param"):
        section = config.get_value(key)
        if isinstance(section, dict) and section.get("device", "none") not in (None, "none"):
            problems.append(
                f"DeepSpeed {key.split('.')[-1]} is not supported with finetuning_type: losia (untested). Remove it: "
                "LoSiA's optimizer states cover the subnets only, a few percent of full fine-tuning's."
            )
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


def _scheduler_problem(training_args: Any) -> str | None:
    from ..hf.scheduler import base_curve

    try:
        base_curve(training_args.lr_scheduler_type, 1, 10, training_args.lr_scheduler_kwargs)
    except ValueError as err:
        return f"{err}".replace("with LoSiA", "with finetuning_type: losia")
    except Exception:
        return None
    return None
