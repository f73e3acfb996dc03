"""The symbols of LLaMA-Factory (and one of transformers) that losia-factory replaces, and how.

Each ``patch_*`` function receives a module right after it has been imported (see
:mod:`losia_factory._import_hook`) and wraps one symbol; the wrapped behaviour only changes for
``finetuning_type: losia`` / ``pilora`` (a LoSiA optimizer, a PiLoRA model). A missing symbol stops the program
with the installed LLaMA-Factory version instead of training something else silently.
"""

from __future__ import annotations

import functools
import os
from importlib import metadata
from types import ModuleType
from typing import Any

SUPPORTED_LLAMAFACTORY = "0.9.5"
MARK = "_losia_factory_patched"

# (module, symbol, what changes) -- the complete list of patched symbols.
PATCHED_SYMBOLS = (
    (
        "llamafactory.hparams.finetuning_args",
        "FinetuningArguments",
        "subclass: accepts finetuning_type 'losia' / 'pilora' and their losia_* / pilora_* fields, validated",
    ),
    (
        "llamafactory.hparams.parser",
        "_parse_train_args",
        "after parsing, refuses settings losia / pilora cannot combine with (ZeRO-3, FSDP, quantization...)",
    ),
    (
        "llamafactory.model.adapter",
        "init_adapter",
        "losia: attaches the subnet blocks for training; pilora: wraps the target linears with stage-1 LoRA",
    ),
    (
        "llamafactory.train.trainer_utils",
        "create_custom_optimizer",
        "losia: returns the LosiaAdamW of the prepared model",
    ),
    (
        "transformers.trainer",
        "Trainer.create_scheduler",
        "LosiaAdamW: builds the rewarming LosiaLRScheduler and adds LosiaCallback; PiLoRA: adds PiloraCallback",
    ),
    (
        "transformers.trainer",
        "Trainer._save",
        "PiLoRA model: saves the standard LoRA adapter (rank r + r') with its masks instead of full weights",
    ),
    (
        "llamafactory.extras.constants",
        "METHODS",
        "'losia' and 'pilora' appended (the web UI's fine-tuning method choices)",
    ),
    ("llamafactory.webui.locales", "LOCALES", "labels of the LoSiA / PiLoRA fields and alerts in en, ru, zh, ko, ja"),
    (
        "llamafactory.webui.components.train",
        "create_train_tab",
        "adds the LoSiA and PiLoRA accordions to the Train tab",
    ),
    (
        "llamafactory.webui.runner",
        "Runner._parse_train_args",
        "adds the losia_* / pilora_* values of the Train tab; DeepSpeed stage 2 gets a LoSiA-safe ZeRO config",
    ),
    (
        "llamafactory.webui.runner",
        "Runner._initialize",
        "losia / pilora: explains settings they cannot run with (fp16, DeepSpeed stage 3, several GPUs...)",
    ),
)


def llamafactory_version() -> str:
    """The installed llamafactory version (for error messages)."""
    try:
        return metadata.version("llamafactory")
    except metadata.PackageNotFoundError:
        return "unknown"


def _require(module: ModuleType, name: str) -> Any:
    owner: Any = module
    for part in name.split("."):
        if not hasattr(owner, part):
            raise ImportError(
                f"losia-factory cannot find {module.__name__}.{name} in the installed llamafactory "
                f"{llamafactory_version()}; it supports llamafactory=={SUPPORTED_LLAMAFACTORY}. Install that version, "
                "or set LOSIA_FACTORY_DISABLE=1 to run LLaMA-Factory without losia."
            )
        owner = getattr(owner, part)
    return owner


def _once(module: ModuleType, key: str) -> bool:
    """True the first time ``key`` is patched on ``module`` (patching is idempotent across reloads)."""
    done = module.__dict__.setdefault(MARK, set())
    if key in done:
        return False
    done.add(key)
    return True


def patch_finetuning_args(module: ModuleType) -> None:
    """Replace ``FinetuningArguments`` by the subclass that accepts ``losia``."""
    from .finetuning_args import extend_finetuning_arguments

    base = _require(module, "FinetuningArguments")
    if _once(module, "FinetuningArguments") and not hasattr(base, "losia_base"):
        module.FinetuningArguments = extend_finetuning_arguments(base)


def patch_parser(module: ModuleType) -> None:
    """Run LoSiA's combination checks right after the training arguments are parsed."""
    from .checks import check_train_args

    original = _require(module, "_parse_train_args")
    if not _once(module, "_parse_train_args"):
        return

    @functools.wraps(original)
    def _parse_train_args(args=None):
        parsed = original(args)
        model_args, data_args, training_args, finetuning_args = parsed[:4]
        check_train_args(model_args, data_args, training_args, finetuning_args)
        return parsed

    module._parse_train_args = _parse_train_args


def patch_adapter(module: ModuleType) -> None:
    """Route ``finetuning_type: losia`` / ``pilora`` in ``init_adapter`` to ``setup_losia`` / ``setup_pilora``."""
    from .adapter import setup_losia, setup_pilora
    from .arguments import METHOD
    from .pilora_arguments import PILORA_METHOD

    original = _require(module, "init_adapter")
    if not _once(module, "init_adapter"):
        return

    @functools.wraps(original)
    def init_adapter(config, model, model_args, finetuning_args, is_trainable):
        if finetuning_args.finetuning_type == METHOD:
            return setup_losia(model, model_args, finetuning_args, is_trainable)
        if finetuning_args.finetuning_type == PILORA_METHOD:
            return setup_pilora(model, model_args, finetuning_args, is_trainable)
        return original(config, model, model_args, finetuning_args, is_trainable)

    module.init_adapter = init_adapter


def patch_trainer_utils(module: ModuleType) -> None:
    """Return the LoSiA optimizer from ``create_custom_optimizer``; patch ``Trainer`` (scheduler, PiLoRA saving)."""
    from ..core import create_losia_optimizer
    from .arguments import METHOD

    original = _require(module, "create_custom_optimizer")
    if _once(module, "create_custom_optimizer"):

        @functools.wraps(original)
        def create_custom_optimizer(model, training_args, finetuning_args):
            if finetuning_args.finetuning_type == METHOD:
                return create_losia_optimizer(
                    model,
                    lr=training_args.learning_rate,
                    weight_decay=training_args.weight_decay,
                    betas=(training_args.adam_beta1, training_args.adam_beta2),
                    eps=training_args.adam_epsilon,
                )
            return original(model, training_args, finetuning_args)

        module.create_custom_optimizer = create_custom_optimizer
    _patch_trainer_create_scheduler()
    _patch_trainer_save()


def _patch_trainer_create_scheduler() -> None:
    import transformers.trainer

    from ..hf import LosiaCallback, build_losia_scheduler, unwrap_optimizer
    from ..hf.pilora_callback import PiloraCallback, find_attachment

    trainer_cls = _require(transformers.trainer, "Trainer")
    original = _require(transformers.trainer, "Trainer.create_scheduler")
    if not _once(transformers.trainer, "Trainer.create_scheduler"):
        return

    @functools.wraps(original)
    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if find_attachment(self.model) is not None and not any(
            isinstance(cb, PiloraCallback) for cb in self.callback_handler.callbacks
        ):
            self.callback_handler.callbacks.insert(0, PiloraCallback())
        losia_optimizer = unwrap_optimizer(self.optimizer if optimizer is None else optimizer)
        if self.lr_scheduler is None and losia_optimizer is not None:
            self.lr_scheduler = build_losia_scheduler(self.args, losia_optimizer, num_training_steps)
            self._created_lr_scheduler = True
            if not any(isinstance(cb, LosiaCallback) for cb in self.callback_handler.callbacks):
                # First in line, so the values it adds to a log reach the reporting callbacks after it.
                self.callback_handler.callbacks.insert(0, LosiaCallback())
            return self.lr_scheduler
        return original(self, num_training_steps, optimizer)

    trainer_cls.create_scheduler = create_scheduler


def _patch_trainer_save() -> None:
    import transformers.trainer

    from ..hf.pilora_callback import find_attachment

    trainer_cls = _require(transformers.trainer, "Trainer")
    original_save = _require(transformers.trainer, "Trainer._save")
    if not _once(transformers.trainer, "Trainer._save"):
        return

    @functools.wraps(original_save)
    def _save(self, output_dir=None, state_dict=None):
        attachment = find_attachment(self.model)
        if attachment is None:
            return original_save(self, output_dir, state_dict)
        # A PiLoRA model is saved as the standard LoRA adapter it is equivalent to, not as wrapped full weights.
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        base = getattr(getattr(self.model, "config", None), "_name_or_path", None)
        attachment.save_adapter(output_dir, base_model_name_or_path=base)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        import torch

        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        return None

    trainer_cls._save = _save


def patch_constants(module: ModuleType) -> None:
    """Offer ``losia`` and ``pilora`` among LLaMA-Factory's methods (the web UI's dropdown reads ``METHODS``)."""
    from .arguments import METHOD
    from .pilora_arguments import PILORA_METHOD

    methods = _require(module, "METHODS")
    for method in (METHOD, PILORA_METHOD):
        if method not in methods:
            methods.append(method)


def patch_webui_locales(module: ModuleType) -> None:
    """Add the LoSiA labels (5 languages) and alerts to LLaMA Board's locale tables."""
    from .webui import ALERTS, LOCALES
    from .webui_pilora import PILORA_ALERTS, PILORA_LOCALES

    _require(module, "LOCALES").update({**LOCALES, **PILORA_LOCALES})
    _require(module, "ALERTS").update({**ALERTS, **PILORA_ALERTS})


def patch_webui_train(module: ModuleType) -> None:
    """Build the LoSiA accordion inside the Train tab."""
    from .webui import extend_train_tab

    original = _require(module, "create_train_tab")
    if _once(module, "create_train_tab"):
        module.create_train_tab = extend_train_tab(original)


def patch_webui_runner(module: ModuleType) -> None:
    """Pass the LoSiA fields to training runs and explain unsupported settings before a run starts."""
    from .arguments import METHOD
    from .pilora_arguments import PILORA_METHOD
    from .webui import losia_train_args, losia_ui_error
    from .webui_pilora import pilora_train_args, pilora_ui_error

    runner = _require(module, "Runner")
    parse = _require(module, "Runner._parse_train_args")
    initialize = _require(module, "Runner._initialize")
    if not _once(module, "Runner"):
        return

    @functools.wraps(parse)
    def _parse_train_args(self, data):
        args = parse(self, data)
        if args.get("finetuning_type") == METHOD:
            get = lambda elem_id: data[self.manager.get_elem_by_id(elem_id)]  # noqa: E731
            args.update(losia_train_args(get))
            if args.get("deepspeed"):
                # LLaMA-Factory's generated ZeRO configs turn on round_robin_gradients, which LoSiA cannot use.
                from llamafactory.webui.common import DEFAULT_CACHE_DIR

                from .deepspeed_config import write_zero_config

                args["deepspeed"] = write_zero_config(DEFAULT_CACHE_DIR, int(get("train.ds_stage")))
        elif args.get("finetuning_type") == PILORA_METHOD:
            args.update(pilora_train_args(lambda elem_id: data[self.manager.get_elem_by_id(elem_id)]))
        return args

    @functools.wraps(initialize)
    def _initialize(self, data, do_train, from_preview):
        error = initialize(self, data, do_train, from_preview)
        get = lambda elem_id: data[self.manager.get_elem_by_id(elem_id)]  # noqa: E731
        method = get("top.finetuning_type")
        if error or not do_train or method not in (METHOD, PILORA_METHOD):
            return error
        from llamafactory.extras.constants import TRAINING_STAGES
        from llamafactory.extras.misc import get_device_count

        stage = TRAINING_STAGES[get("train.training_stage")]
        if method == PILORA_METHOD:
            return pilora_ui_error(get, get("top.lang"), stage, get_device_count())
        return losia_ui_error(get, get("top.lang"), stage)

    runner._parse_train_args = _parse_train_args
    runner._initialize = _initialize
