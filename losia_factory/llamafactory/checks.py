"""Parse-time refusals of every registered method: settings it cannot run with, reported before a model loads."""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import tempfile
from typing import Any

from .method import Method

# LLaMA-Factory's words for keys HfArgumentParser did not use (a YAML / dict key, or a command-line flag).
_UNUSED_KEYS = re.compile(r"^Some (?:keys|specified arguments) are not used by the HfArgumentParser: (\[.*\])$", re.S)

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
    """Refuse stages ``method`` cannot run and LLaMA-Factory options it would ignore.

    Runs while the fine-tuning arguments are built, before LLaMA-Factory's own checks: those read the method as its
    ``runs_as`` and would word a problem for ``full`` or ``lora`` ("Cannot use LoRA with GaLore ...").
    """
    if finetuning_args.stage not in method.stages:
        raise ValueError(
            f"stage: {finetuning_args.stage} is not supported with finetuning_type: {method.name}{method.stage_note}. "
            f"Use one of {', '.join(method.stages)}."
        )
    enabled = enabled_optimizers(finetuning_args)
    if enabled:
        flag, name = enabled[0]
        raise ValueError(
            f"{flag}: {name} replaces the optimizer and cannot be combined with finetuning_type: {method.name}. "
            f"Remove {flag}."
        )
    if getattr(finetuning_args, "use_llama_pro", False):
        raise ValueError(
            f"use_llama_pro cannot be combined with finetuning_type: {method.name}. Remove use_llama_pro."
        )
    changed = other_method_arguments(finetuning_args)
    if changed:
        name, value = changed[0]
        instead = method.prefix + _OWN_ARGUMENT.get(name, "")
        fix = f"set {instead} instead" if instead in _argument_names(method) else "remove it"
        raise ValueError(f"{name} ({value}) does not apply with finetuning_type: {method.name}: {fix}.")


# A LoRA / OFT / freeze argument -> the suffix of the method argument that does its job, where there is one.
_OWN_ARGUMENT = {
    "lora_rank": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lora_target": "target",
    "oft_target": "target",
    "freeze_extra_modules": "extra_modules",
}


def _argument_names(method: Method) -> list[str]:
    from .arguments import options

    return [o.name for o in options(method)]


def other_method_arguments(finetuning_args: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` of the LoRA, OFT and freeze arguments set to something other than their defaults."""
    from dataclasses import MISSING, fields

    from llamafactory.hparams import finetuning_args as module

    changed = []
    for group in (module.LoraArguments, module.OFTArguments, module.FreezeArguments):
        for f in fields(group):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            value = getattr(finetuning_args, f.name, default)
            if value != default and (f.name, value) not in changed:
                changed.append((f.name, value))
    return changed


def check_train_args(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any) -> None:
    """Raise ``ValueError`` listing every setting the chosen method does not support, each naming the fix.

    Then settle which checkpoint a resumed run starts from (:func:`choose_checkpoint`).
    """
    from .methods import method_named

    method = method_named(finetuning_args.finetuning_type)
    if method is None:
        return
    problems = method.refusals(model_args, training_args, finetuning_args)
    if training_args.do_train:
        problems += output_dir_problems(training_args.output_dir) + empty_dataset_problems(data_args)
    if problems:
        raise ValueError(f"Unsupported settings for finetuning_type: {method.name}:\n  - " + "\n  - ".join(problems))
    choose_checkpoint(method, training_args)


def output_dir_problems(output_dir: str) -> list[str]:
    """Why ``output_dir`` cannot take checkpoints, found now rather than when the Trainer first writes to it.

    The nearest existing directory on the path must accept a new file: a probe file is created and removed (a
    permission check alone would pass for root on a read-only mount).
    """
    path = os.path.abspath(output_dir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return [
            f"output_dir: {output_dir} cannot be created: {existing} is a file, not a directory. Choose another "
            "output_dir."
        ]
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        where = "it" if existing == path else f"its parent {existing}"
        return [f"output_dir: {output_dir} is not writable ({where}: {err.strerror}). Choose a writable output_dir."]
    return []


def empty_dataset_problems(data_args: Any) -> list[str]:
    """The training datasets that are local JSON / JSON Lines files without a single row.

    LLaMA-Factory itself would stop later, after loading the tokenizer, with datasets' 'Instruction "train"
    corresponds to no data!'. Only the start of each file is read; other formats and hub datasets are left to it.
    """
    from llamafactory.data.parser import get_dataset_list

    if not isinstance(data_args.dataset_dir, str) or data_args.dataset_dir.startswith(("ONLINE", "REMOTE:")):
        return []  # Hub datasets (and a dataset_info.json on the Hub) are not fetched twice
    try:
        attrs = get_dataset_list(data_args.dataset, data_args.dataset_dir)
    except Exception:
        return []  # an unknown dataset name or a missing dataset_info.json: LLaMA-Factory reports those itself
    problems = []
    for name, attr in zip(data_args.dataset, attrs):
        if attr.load_from != "file":
            continue
        path = os.path.join(data_args.dataset_dir, attr.dataset_name)
        files = [os.path.join(path, f) for f in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
        files = [f for f in files if f.endswith((".json", ".jsonl"))]
        if files and not any(_has_rows(f) for f in files):
            problems.append(f"dataset {name} ({path}) has no rows. Add examples to it or remove it from `dataset`.")
    return problems


def _has_rows(path: str) -> bool:
    """Whether a JSON file (a list) or a JSON Lines file holds at least one record; unreadable files count as yes."""
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                return any(line.strip() for line in f)
            head = f.read(4096).lstrip()
            if not head:
                return False
            if not head.startswith("["):
                return True  # not a list of records: LLaMA-Factory / datasets decide what it holds
            if len(head) < 4096:
                return bool(json.loads(head))
            return not head[1:].lstrip().startswith("]")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True  # not ours to judge: the loader reports unreadable files in its own words


def unknown_argument_hint(message: str) -> str:
    """What to add to LLaMA-Factory's 'Some keys are not used' error about misspelled ``losia_*`` / ``pilora_*`` keys.

    Names the argument each such key was probably meant to be; empty when no unused key has a method's prefix.
    """
    from .arguments import options
    from .methods import REGISTERED

    match = _UNUSED_KEYS.match(message)
    if not match:
        return ""
    try:
        keys = [str(k).lstrip("-") for k in ast.literal_eval(match.group(1))]
    except (ValueError, SyntaxError):
        return ""
    hints = []
    for method in REGISTERED:
        names = [o.name for o in options(method)]
        for key in (k for k in keys if k.startswith(method.prefix)):
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            guess = f"did you mean {close[0]}?" if close else f"the {method.prefix}* arguments are {', '.join(names)}."
            hints.append(f"{key} is not a {method.title} argument: {guess}")
    return " ".join(hints)


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
