"""The symbols of LLaMA-Factory (and one of transformers) that losia-factory replaces, and how.

Each ``patch_*`` function receives a module right after it has been imported (see
:mod:`losia_factory._import_hook`) and wraps one symbol; the wrapped behaviour only changes for a registered
method (:mod:`.methods`: ``losia``, ``pilora``), through its description. A missing symbol stops the program
with the installed LLaMA-Factory version instead of training something else silently.
"""

from __future__ import annotations

import functools
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
        "transformers.trainer",
        "Trainer.save_model",
        "LoSiA under ZeRO-3: gathers the model itself (base tensor names, one all-gather per tensor)",
    ),
    (
        "transformers.trainer",
        "Trainer._load_from_checkpoint",
        "PiLoRA model: resumes stage, masks, hit counts and adapter values from pilora_state.safetensors",
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
    """Run LoSiA's combination checks right after the training arguments are parsed; suggest misspelled names."""
    from .checks import check_train_args, unknown_argument_hint

    original = _require(module, "_parse_train_args")
    if not _once(module, "_parse_train_args"):
        return

    @functools.wraps(original)
    def _parse_train_args(args=None):
        try:
            parsed = original(args)
        except ValueError as err:
            hint = unknown_argument_hint(str(err))
            if hint:
                raise ValueError(f"{err}. {hint}") from None
            raise
        model_args, data_args, training_args, finetuning_args = parsed[:4]
        check_train_args(model_args, data_args, training_args, finetuning_args)
        return parsed

    module._parse_train_args = _parse_train_args


def patch_adapter(module: ModuleType) -> None:
    """Route a registered method's ``finetuning_type`` in ``init_adapter`` to the method's own setup."""
    from .methods import method_named

    original = _require(module, "init_adapter")
    if not _once(module, "init_adapter"):
        return

    @functools.wraps(original)
    def init_adapter(config, model, model_args, finetuning_args, is_trainable):
        method = method_named(finetuning_args.finetuning_type)
        if method is not None:
            return method.setup(model, model_args, finetuning_args, is_trainable)
        return original(config, model, model_args, finetuning_args, is_trainable)

    module.init_adapter = init_adapter


def patch_trainer_utils(module: ModuleType) -> None:
    """Return a method's own optimizer from ``create_custom_optimizer``; patch ``Trainer`` (scheduler, saving)."""
    from .methods import method_named

    original = _require(module, "create_custom_optimizer")
    if _once(module, "create_custom_optimizer"):

        @functools.wraps(original)
        def create_custom_optimizer(model, training_args, finetuning_args):
            method = method_named(finetuning_args.finetuning_type)
            if method is not None and method.create_optimizer is not None:
                return method.create_optimizer(model, training_args, finetuning_args)
            return original(model, training_args, finetuning_args)

        module.create_custom_optimizer = create_custom_optimizer
    _patch_trainer_create_scheduler()
    _patch_trainer_save()
    _patch_trainer_save_model()
    _patch_trainer_load_checkpoint()


def _patch_trainer_create_scheduler() -> None:
    import transformers.trainer

    from .methods import REGISTERED

    trainer_cls = _require(transformers.trainer, "Trainer")
    original = _require(transformers.trainer, "Trainer.create_scheduler")
    if not _once(transformers.trainer, "Trainer.create_scheduler"):
        return

    @functools.wraps(original)
    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # Every method looks: the Trainer knows no finetuning_type, a method recognizes its model or optimizer.
        for method in REGISTERED:
            if method.prepare_trainer is not None and method.prepare_trainer(self, num_training_steps, optimizer):
                return self.lr_scheduler
        return original(self, num_training_steps, optimizer)

    trainer_cls.create_scheduler = create_scheduler


def _patch_trainer_save() -> None:
    import transformers.trainer

    from .methods import REGISTERED

    trainer_cls = _require(transformers.trainer, "Trainer")
    original_save = _require(transformers.trainer, "Trainer._save")
    if not _once(transformers.trainer, "Trainer._save"):
        return

    @functools.wraps(original_save)
    def _save(self, output_dir=None, state_dict=None):
        folder = output_dir if output_dir is not None else self.args.output_dir
        for method in REGISTERED:
            if method.save_model is not None and method.save_model(self, folder):
                return None
        return original_save(self, output_dir, state_dict)

    trainer_cls._save = _save


def _patch_trainer_save_model() -> None:
    import transformers.trainer

    from .methods import REGISTERED

    trainer_cls = _require(transformers.trainer, "Trainer")
    original = _require(transformers.trainer, "Trainer.save_model")
    if not _once(transformers.trainer, "Trainer.save_model"):
        return

    @functools.wraps(original)
    def save_model(self, output_dir=None, _internal_call=False):
        # Every rank gets here (the Trainer gathers partitioned weights collectively); only the saving one writes.
        for method in REGISTERED:
            state_dict = None if method.gather_state_dict is None else method.gather_state_dict(self)
            if state_dict is not None:
                if self.args.should_save:
                    self._save(output_dir if output_dir is not None else self.args.output_dir, state_dict=state_dict)
                if self.args.push_to_hub and not _internal_call:
                    self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
                return None
        return original(self, output_dir, _internal_call)

    trainer_cls.save_model = save_model


def _patch_trainer_load_checkpoint() -> None:
    import transformers.trainer

    from .methods import REGISTERED

    trainer_cls = _require(transformers.trainer, "Trainer")
    original_load = _require(transformers.trainer, "Trainer._load_from_checkpoint")
    if not _once(transformers.trainer, "Trainer._load_from_checkpoint"):
        return

    @functools.wraps(original_load)
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        for method in REGISTERED:
            if method.load_checkpoint is not None and method.load_checkpoint(self, resume_from_checkpoint):
                return None
        return original_load(self, resume_from_checkpoint, model)

    trainer_cls._load_from_checkpoint = _load_from_checkpoint


def patch_constants(module: ModuleType) -> None:
    """Offer every registered method among LLaMA-Factory's methods (the web UI's dropdown reads ``METHODS``)."""
    from .methods import REGISTERED

    methods = _require(module, "METHODS")
    for method in REGISTERED:
        if method.name not in methods:
            methods.append(method.name)


def patch_webui_locales(module: ModuleType) -> None:
    """Add the methods' labels (5 languages) and alerts to LLaMA Board's locale tables."""
    from .webui import alerts, locales

    _require(module, "LOCALES").update(locales())
    _require(module, "ALERTS").update(alerts())


def patch_webui_train(module: ModuleType) -> None:
    """Build the methods' accordions inside the Train tab."""
    from .webui import extend_train_tab

    original = _require(module, "create_train_tab")
    if _once(module, "create_train_tab"):
        module.create_train_tab = extend_train_tab(original)


def patch_webui_runner(module: ModuleType) -> None:
    """Pass the method fields to training runs and explain unsupported settings before a run starts."""
    from .methods import method_named
    from .webui import alert_text, train_args

    runner = _require(module, "Runner")
    parse = _require(module, "Runner._parse_train_args")
    initialize = _require(module, "Runner._initialize")
    if not _once(module, "Runner"):
        return

    @functools.wraps(parse)
    def _parse_train_args(self, data):
        args = parse(self, data)
        method = method_named(args.get("finetuning_type"))
        if method is not None:
            get = lambda elem_id: data[self.manager.get_elem_by_id(elem_id)]  # noqa: E731
            args.update(train_args(method, get))
            if method.ui.adjust_train_args is not None:
                method.ui.adjust_train_args(args, get)
        return args

    @functools.wraps(initialize)
    def _initialize(self, data, do_train, from_preview):
        error = initialize(self, data, do_train, from_preview)
        get = lambda elem_id: data[self.manager.get_elem_by_id(elem_id)]  # noqa: E731
        method = method_named(get("top.finetuning_type"))
        if error or not do_train or method is None:
            return error
        from llamafactory.extras.constants import TRAINING_STAGES
        from llamafactory.extras.misc import get_device_count

        key = method.ui.refusal(get, TRAINING_STAGES[get("train.training_stage")], get_device_count())
        return alert_text(key, get("top.lang")) if key else ""

    runner._parse_train_args = _parse_train_args
    runner._initialize = _initialize
