"""The method descriptions and what is generated from them: arguments, casts, widgets, labels, the reference."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from losia_factory.core.errors import ConfigError
from losia_factory.llamafactory.arguments import (
    argument_dataclass,
    argument_error,
    arguments_table,
    build_config,
    changed_arguments,
    options,
)
from losia_factory.llamafactory.method import Method, WebUiGroup
from losia_factory.llamafactory.methods import LOSIA, PILORA, REGISTERED, method_named
from losia_factory.llamafactory.webui import LANGS, create_accordion, input_names, method_locales, train_args


@dataclass
class ToyConfig:
    """A config with one field of each supported kind.

    Args:
        size: An int.
        ratio: A float.
        kind: A choice.
        enabled: A bool.
        names: Names.
        path: A path.
    """

    size: int = field(default=4, metadata={"help": "Size; see `ratio`."})
    ratio: float = field(default=0.5, metadata={"help": "Ratio."})
    kind: Literal["a", "b"] = field(default="a", metadata={"help": "Kind."})
    enabled: bool = field(default=False, metadata={"help": "Whether `kind` applies."})
    names: tuple[str, ...] = field(default=("x", "y"), metadata={"help": "Names."})
    path: str = field(default="", metadata={"help": "Path."})

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError("size", f"size must be >= 1, got {self.size}.")


TOY = Method(
    name="toy",
    title="Toy",
    summary="a toy",
    config_class=ToyConfig,
    runs_as="full",
    stages=("sft",),
    setup=lambda model, *_: model,
    refusals=lambda *_: [],
    docs_intro="Set `finetuning_type: toy`.",
    renames={"names": "targets"},
    message_names_argument=True,
    ui=WebUiGroup(
        title={"en": "Toy", "ru": "Игрушка"},
        note={"en": "A toy."},
        refusal=lambda get, stage, devices: "",
        labels={"size": {"en": {"label": "Size", "info": "How big."}}},
        sliders={"ratio": (0.0, 1.0, 0.1)},
        rows=(("size", "ratio"),),
    ),
)


@pytest.mark.parametrize("method", REGISTERED, ids=lambda m: m.name)
def test_every_config_field_is_an_argument_with_help_and_documented(method):
    config_fields = [f.name for f in dataclasses.fields(method.config_class)]
    assert [o.field for o in options(method)] == config_fields
    assert all(o.help and o.name.startswith(method.prefix) for o in options(method))
    # The docstring's Args section documents exactly the fields, in order.
    args = method.config_class.__doc__.split("Args:")[1]
    documented = re.findall(r"^ {8}(\w+):", args, flags=re.M)
    assert documented == config_fields


def test_argument_names_types_and_defaults_stay_those_users_know():
    losia = {o.name: (o.type, o.default) for o in options(LOSIA)}
    assert losia["losia_target"] == (str, "all")
    assert losia["losia_extra_modules"] == (str | None, None)
    assert losia["losia_layers_path"] == (str | None, None)
    assert losia["losia_ema_beta1"] == (float, 0.85) and losia["losia_pro"] == (bool, True)
    pilora = {o.name: o for o in options(PILORA)}
    assert pilora["pilora_target"].default == "q_proj,k_proj,v_proj,up_proj,down_proj"
    # Backticked field names in a help text name the argument.
    assert "pilora_probe_ratio of the training steps" in pilora["pilora_probe_steps"].help
    assert "`" not in pilora["pilora_partition"].help


def test_registry_lookup():
    assert method_named("losia") is LOSIA and method_named("pilora") is PILORA
    assert method_named("lora") is None and method_named(None) is None


def test_a_new_field_becomes_an_argument_a_cast_and_a_labelled_widget():
    mixin = argument_dataclass(TOY)
    args = mixin()
    assert [f.name for f in dataclasses.fields(mixin)] == list(input_names(TOY))
    assert (args.toy_size, args.toy_enabled, args.toy_targets, args.toy_path) == (4, False, "x,y", None)
    assert dataclasses.fields(mixin)[3].metadata["help"] == "Whether toy_kind applies."
    config = build_config(TOY, mixin(toy_enabled=True, toy_targets="a,b"))
    assert config.enabled is True and config.names == "a,b" and config.path == ""
    assert changed_arguments(TOY, mixin(toy_enabled=True, toy_path="")) == ["toy_enabled"]
    with pytest.raises(ValueError, match=r"^Invalid toy_size: toy_size must be >= 1, got 0\.$"):
        build_config(TOY, mixin(toy_size=0))
    assert "| `toy_enabled` | bool | `False` | Whether toy_kind applies. |" in arguments_table(TOY)

    values = {"train.toy_size": 7.0, "train.toy_ratio": 1, "train.toy_kind": "b", "train.toy_enabled": True}
    values.update({"train.toy_targets": "x", "train.toy_path": ""})
    cast = train_args(TOY, values.__getitem__)
    assert cast == {
        "toy_size": 7,
        "toy_ratio": 1.0,
        "toy_kind": "b",
        "toy_enabled": True,
        "toy_targets": "x",
        "toy_path": None,
    }
    assert type(cast["toy_size"]) is int and type(cast["toy_ratio"]) is float

    labels = method_locales(TOY)
    assert set(labels) == {"toy_tab", "toy_note", *input_names(TOY)}
    assert all(set(entry) == set(LANGS) for entry in labels.values())
    assert labels["toy_size"]["ja"] == {"label": "Size", "info": "How big."}  # English stands in for ja
    assert labels["toy_enabled"]["ru"] == {"label": "toy_enabled", "info": "Whether toy_kind applies."}
    assert labels["toy_tab"]["ru"] == {"label": "Игрушка"} and labels["toy_tab"]["zh"] == {"label": "Toy"}


def test_widgets_follow_the_option_types():
    import gradio as gr

    with gr.Blocks():
        created = create_accordion(TOY)
    kinds = {name: type(elem).__name__ for name, elem in created.items()}
    assert kinds == {
        "toy_tab": "Accordion",
        "toy_note": "Markdown",
        "toy_size": "Number",
        "toy_ratio": "Slider",
        "toy_kind": "Dropdown",
        "toy_enabled": "Checkbox",
        "toy_targets": "Textbox",
        "toy_path": "Textbox",
    }
    assert created["toy_size"].precision == 0 and created["toy_targets"].value == "x,y"


def test_config_errors_are_restated_with_the_argument_name():
    assert argument_error(LOSIA, ConfigError("target_modules", "target_modules=['x'] matches nothing")) == (
        "Invalid losia_target: losia_target=['x'] matches nothing"
    )
    assert argument_error(PILORA, ConfigError("target_modules", "target_modules ['x'] match nothing")) == (
        "Invalid pilora_target: pilora_target ['x'] match nothing"
    )
    # Every whole-word mention of the field is restated; other fields only where backticked, as in help texts.
    assert argument_error(PILORA, ConfigError("rank", "supplementary_rank exceeds rank")) == (
        "Invalid pilora_rank: supplementary_rank exceeds pilora_rank"
    )
    assert argument_error(PILORA, ConfigError("supplementary_rank", "supplementary_rank > `rank` (rank r)")) == (
        "Invalid pilora_supplementary_rank: pilora_supplementary_rank > pilora_rank (rank r)"
    )


def test_a_field_no_argument_can_carry_is_refused():
    @dataclass
    class Bad:
        weights: dict = field(default_factory=dict, metadata={"help": "Weights."})

    bad = dataclasses.replace(TOY, config_class=Bad)
    with pytest.raises(TypeError, match="weights has no default"):
        options(bad)
