"""Parse-time refusals of every registered method: settings it cannot run with, reported before a model loads."""

from __future__ import annotations

import os
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
    """Raise ``ValueError`` listing every setting the chosen method does not support, each naming the fix.

    Then settle which checkpoint a resumed run starts from (:func:`choose_checkpoint`).
    """
    from .methods import method_named

    method = method_named(finetuning_args.finetuning_type)
    if method is None:
        return
    problems = method.refusals(model_args, training_args, finetuning_args)
    if problems:
        raise ValueError(f"Unsupported settings for finetuning_type: {method.name}:\n  - " + "\n  - ".join(problems))
    choose_checkpoint(method, training_args)


def choose_checkpoint(method: Method, training_args: Any) -> None:
    """Resume only from a complete checkpoint (:mod:`losia_factory.hf.checkpoints`); never from a half-written one.

    * ``resume_from_checkpoint: <folder>``: refused, naming what is missing, when the folder is incomplete;
    * ``resume_from_checkpoint: true``, or unset with ``overwrite_output_dir`` off and checkpoints in ``output_dir``
      (LLaMA-Factory then resumes from the newest one, which comes right after this check): set to the newest
      complete checkpoint; newer incomplete ones are skipped with a warning naming them.
    """
    from ..hf.checkpoints import checkpoint_problems, checkpoints, last_complete_checkpoint

    if not training_args.do_train:
        return
    world_size = int(getattr(training_args, "world_size", 1) or 1)
    optimizer_saved = not getattr(training_args, "save_only_model", False)
    resume = training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    if isinstance(resume, str) and resume.lower() not in ("true", "false"):
        if not os.path.isdir(resume):
            raise ValueError(
                f"resume_from_checkpoint: {resume} is not a checkpoint folder. Name a checkpoint-N folder of an "
                "earlier run, or set true to resume from the newest complete checkpoint in output_dir."
            )
        problems = checkpoint_problems(resume, world_size, method.checkpoint_files, optimizer_saved)
        if problems:
            parent = os.path.dirname(os.path.normpath(resume))
            latest, _ = last_complete_checkpoint(parent, world_size, method.checkpoint_files, optimizer_saved)
            hint = f"resume from {latest}" if latest else "start a new run (overwrite_output_dir: true)"
            raise ValueError(
                f"resume_from_checkpoint: {resume} is incomplete ({'; '.join(problems)}): its save was interrupted, "
                f"or it was not written by a finetuning_type: {method.name} run. Delete it and {hint}."
            )
        return
    automatic = resume is None and not getattr(training_args, "overwrite_output_dir", False)
    if not (resume is True or (isinstance(resume, str) and resume.lower() == "true") or automatic):
        return
    if automatic and not checkpoints(output_dir):
        return  # nothing to resume: LLaMA-Factory starts a new run (or refuses a non-empty output_dir itself)
    latest, skipped = last_complete_checkpoint(output_dir, world_size, method.checkpoint_files, optimizer_saved)
    if latest is None:
        raise ValueError(
            f"No complete checkpoint to resume from in output_dir {output_dir}: "
            + "; ".join(f"{os.path.basename(k)}: {', '.join(v)}" for k, v in skipped.items())
            + ". Delete the incomplete folders, or start a new run (overwrite_output_dir: true)."
        )
    if skipped:
        from llamafactory.extras import logging  # its handler prints in every launcher, torchrun workers included

        logging.get_logger("llamafactory.checks").warning_rank0(
            "Skipping incomplete checkpoints (their save was interrupted): "
            + "; ".join(f"{os.path.basename(k)}: {', '.join(v)}" for k, v in skipped.items())
            + f". Resuming from {latest}."
        )
    training_args.resume_from_checkpoint = latest
