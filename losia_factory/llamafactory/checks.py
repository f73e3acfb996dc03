"""Parse-time refusals of every registered method: settings it cannot run with, reported before a model loads."""

from __future__ import annotations

from typing import Any

from .method import Method

# LLaMA-Factory flags that replace the Trainer's optimizer -> what they are called.
OPTIMIZER_FLAGS = {
    "use_galore": "GaLore",
    "use_apollo": "APOLLO",
    "use_badam": "BAdam",
    "use_adam_mini": "Adam-mini",
    "use_muon": "Muon",
}


def enabled_optimizers(finetuning_args: Any) -> list[tuple[str, str]]:
    """``(flag, name)`` of each optimizer-replacing LLaMA-Factory option that is switched on."""
    return [(flag, name) for flag, name in OPTIMIZER_FLAGS.items() if getattr(finetuning_args, flag, False)]


def optim_name(training_args: Any) -> str:
    """The ``optim`` setting as a string (transformers stores an enum)."""
    return getattr(training_args.optim, "value", training_args.optim)


def check_stage(method: Method, finetuning_args: Any) -> None:
    """Refuse stages ``method`` cannot run, then its own argument rules (while the fine-tuning arguments are built)."""
    if finetuning_args.stage not in method.stages:
        raise ValueError(
            f"stage: {finetuning_args.stage} is not supported with finetuning_type: {method.name}{method.stage_note}. "
            f"Use one of {', '.join(method.stages)}."
        )
    if method.check_arguments is not None:
        method.check_arguments(finetuning_args)


def check_train_args(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any) -> None:
    """Raise ``ValueError`` listing every setting the chosen method does not support, each naming the fix."""
    from .methods import method_named

    method = method_named(finetuning_args.finetuning_type)
    if method is None:
        return
    problems = method.refusals(model_args, training_args, finetuning_args)
    if problems:
        raise ValueError(f"Unsupported settings for finetuning_type: {method.name}:\n  - " + "\n  - ".join(problems))
