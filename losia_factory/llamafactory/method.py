"""What the integration needs to know about one fine-tuning method: the description type every method fills in.

A method is one module in :mod:`losia_factory.llamafactory.methods` that builds a :class:`Method`; the shared
integration code (arguments, parse-time checks, model preparation, trainer hooks, web UI) loops over the registered
descriptions and never names a method. Argument fields, web UI widgets, value casts and the argument reference are
generated from the fields of ``config_class`` and their ``help`` metadata, so an option is declared once, on the
config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A getter of LLaMA Board values by element id ("top.lang", "train.ds_stage", ...).
UiGetter = Callable[[str], Any]


@dataclass(frozen=True)
class WebUiGroup:
    """A method's accordion in LLaMA Board's Train tab, its translations and the runs it explains away.

    Attributes:
        title: Accordion label per language (``{"en": ..., "ru": ...}``); missing languages show the English one.
        note: Markdown shown at the top of the accordion, per language.
        labels: ``{config field: {lang: {"label": ..., "info": ...}}}``. A field or a language without an entry
            shows the argument name and the field's English help, so a new field needs no translation to appear.
        sliders: ``{config field: (minimum, maximum, step)}``; numbers without an entry get a plain number box.
        rows: Config field names per row of widgets; fields in no row fill one more row at the end.
        alerts: ``{alert key: {lang: message}}`` (missing languages show the English message).
        refusal: ``(get, stage, device_count) -> alert key or ""``: why a run cannot start with these settings.
        adjust_train_args: ``(args, get) -> None``: last changes to the training arguments the web UI builds.
        allows_offload: Whether DeepSpeed offload stays available when the method is chosen.
    """

    title: Mapping[str, str]
    note: Mapping[str, str]
    refusal: Callable[[UiGetter, str, int], str]
    labels: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    sliders: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    rows: tuple[tuple[str, ...], ...] = ()
    alerts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    adjust_train_args: Callable[[dict[str, Any], UiGetter], None] | None = None
    allows_offload: bool = False


# eq=False: a description is compared and hashed by identity (it holds dicts and functions), so it can key caches.
@dataclass(frozen=True, eq=False)
class Method:
    """One fine-tuning method offered as ``finetuning_type: <name>``.

    Attributes:
        name: The ``finetuning_type`` value; arguments are ``<name>_<config field>`` unless ``renames`` says else.
        title: Name shown in messages and logs ("LoSiA").
        summary: One phrase for the ``finetuning_type`` help ("LoSiA / LoSiA-Pro subnet training").
        config_class: Dataclass of the method's hyper-parameters. Each field needs a default and ``help`` metadata;
            its constructor raises :class:`~losia_factory.core.errors.ConfigError` for a bad value.
        runs_as: The LLaMA-Factory method whose own argument checks apply and whose output it saves ("full",
            "lora").
        stages: Training stages it supports.
        setup: ``(model, model_args, finetuning_args, is_trainable) -> model``, in place of ``init_adapter``.
        refusals: ``(model_args, training_args, finetuning_args) -> [problem, ...]``: settings it cannot run with,
            each naming the setting and the fix; checked right after the arguments are parsed.
        ui: Its web UI group.
        docs_intro: The sentence under its heading in docs/arguments.md.
        renames: ``{config field: argument suffix}`` where the argument name differs from the field name.
        stage_note: Why other stages are refused, appended to that message (" (its trainer builds ...)").
        message_names_argument: Whether a config error's text, when it starts with the field name, is restated
            with the argument name too ("Invalid pilora_rank: pilora_rank must be ..."), so the message names only
            the option the user set.
        check_arguments: ``(finetuning_args) -> None``: rules between its fields and LLaMA-Factory's, raising
            ``ValueError``; run while the fine-tuning arguments are built, once its config is validated.
        create_optimizer: ``(model, training_args, finetuning_args) -> optimizer``, or None for LLaMA-Factory's.
        prepare_trainer: ``(trainer, num_training_steps, optimizer) -> bool``: adds its callbacks and, when it
            returns True, has set ``trainer.lr_scheduler`` itself. Called for every run, whatever the method:
            it recognizes its own runs by their model or optimizer.
        save_model: ``(trainer, output_dir) -> bool``: saves the model itself and returns True for its own runs.
        gather_state_dict: ``(trainer) -> state_dict | None``: for its own runs whose weights an engine partitions
            (DeepSpeed ZeRO-3), the whole model to save, gathered collectively on every rank (an empty dict on the
            ranks that do not save); None for other runs, which the Trainer gathers as usual.
        load_checkpoint: ``(trainer, checkpoint_dir) -> bool``: restores its model from a checkpoint in place of the
            Trainer's weight loading and returns True for its own runs.
        checkpoint_files: Files every complete checkpoint of its runs holds; a resume from a checkpoint without
            them is refused (see :mod:`losia_factory.hf.checkpoints`).
    """

    name: str
    title: str
    summary: str
    config_class: type
    runs_as: str
    stages: tuple[str, ...]
    setup: Callable[[Any, Any, Any, bool], Any]
    refusals: Callable[[Any, Any, Any], list[str]]
    ui: WebUiGroup
    docs_intro: str
    renames: Mapping[str, str] = field(default_factory=dict)
    stage_note: str = ""
    message_names_argument: bool = False
    check_arguments: Callable[[Any], None] | None = None
    create_optimizer: Callable[[Any, Any, Any], Any] | None = None
    prepare_trainer: Callable[[Any, int, Any], bool] | None = None
    save_model: Callable[[Any, str], bool] | None = None
    gather_state_dict: Callable[[Any], dict[str, Any] | None] | None = None
    load_checkpoint: Callable[[Any, str], bool] | None = None
    checkpoint_files: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        """The prefix of its argument names."""
        return f"{self.name}_"

    @property
    def config_attribute(self) -> str:
        """The attribute of the parsed ``FinetuningArguments`` that holds its validated config (None otherwise)."""
        return f"{self.name}_config"

    def argument_name(self, config_field: str) -> str:
        """The LLaMA-Factory argument that sets ``config_field``."""
        return self.prefix + self.renames.get(config_field, config_field)
