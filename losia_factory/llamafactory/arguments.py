"""LLaMA-Factory arguments generated from a method's config dataclass, and their way back into the config.

Each config field becomes one argument ``<method>_<field>`` (or the method's rename) with the field's default and
``help``. Types are mapped to what a YAML file or the command line can carry: a tuple of names becomes one
comma-separated string, and a string or tuple that defaults to empty becomes an optional string defaulting to None,
which reads "unset" in the argument reference.
"""

from __future__ import annotations

import functools
import re
from dataclasses import MISSING, Field, dataclass, field, fields, make_dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..core.errors import ConfigError
from .method import Method

_BACKTICKED = re.compile(r"`(\w+)`")


@dataclass(frozen=True)
class Option:
    """One config field as a LLaMA-Factory argument."""

    field: str
    name: str
    type: Any
    default: Any
    help: str

    @property
    def optional(self) -> bool:
        """Whether the argument defaults to None ("unset": the config's own default applies)."""
        return self.default is None


@functools.cache
def options(method: Method) -> tuple[Option, ...]:
    """The arguments of ``method``, in the order of its config fields.

    Raises:
        TypeError: for a config field without default or ``help`` metadata, or of a type no argument can carry.
    """
    hints = get_type_hints(method.config_class)
    names = {f.name: method.argument_name(f.name) for f in fields(method.config_class) if f.init}
    result = []
    for f in fields(method.config_class):
        if not f.init:
            continue
        if "help" not in f.metadata:
            raise TypeError(f"{method.config_class.__name__}.{f.name} has no help metadata: its argument needs one.")
        type_, default = _argument_type(f, hints[f.name])
        help_text = _BACKTICKED.sub(lambda m: names.get(m.group(1), m.group(0)), f.metadata["help"])
        result.append(Option(f.name, names[f.name], type_, default, help_text))
    return tuple(result)


def _argument_type(config_field: Field, hint: Any) -> tuple[Any, Any]:
    """``(argument type, argument default)`` of a config field."""
    default = config_field.default
    if default is MISSING:
        raise TypeError(f"config field {config_field.name} has no default, so its argument could not have one.")
    if get_origin(hint) is Literal or hint in (bool, int, float):
        return hint, default
    if hint is str:
        return (str, default) if default else (str | None, None)
    members = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if all(m is str or get_origin(m) is tuple for m in members):
        # A tuple of names (the config also accepts the comma-separated string) is one comma-separated argument.
        joined = default if isinstance(default, str) else ",".join(default)
        return (str, joined) if joined else (str | None, None)
    raise TypeError(f"config field {config_field.name}: {hint} has no argument form (bool, int, float, str, Literal).")


@functools.cache
def argument_dataclass(method: Method) -> type:
    """The dataclass of ``method``'s arguments, a mixin of LLaMA-Factory's ``FinetuningArguments``."""
    mixin = make_dataclass(
        f"{method.title.replace('-', '')}Arguments",
        [(o.name, o.type, field(default=o.default, metadata={"help": o.help})) for o in options(method)],
    )
    mixin.__module__ = __name__
    mixin.__doc__ = f"Arguments of {method.title} training (``finetuning_type: {method.name}``)."
    return mixin


def build_config(method: Method, args: Any) -> Any:
    """``method``'s config from the parsed arguments (unset optional arguments keep the config's defaults).

    Raises:
        ValueError: naming the argument when a value is invalid.
    """
    for o in options(method):
        if getattr(args, o.name) is None and not o.optional:
            # An empty YAML value (`losia_time_slot:`) arrives as None; the default would apply without a word.
            raise ValueError(
                f"Invalid {o.name}: {o.name} is empty. Give it a value (default: {o.default}) or remove the line."
            )
    values = {o.field: getattr(args, o.name) for o in options(method) if getattr(args, o.name) is not None}
    try:
        return method.config_class(**values)
    except ConfigError as err:
        raise ValueError(argument_error(method, err)) from None


def argument_error(method: Method, err: ConfigError) -> str:
    """Restate a config error with the argument name.

    Where the method asks for it, the text says the argument name too: every whole-word mention of the field, and
    other fields where backticked.
    """
    name = method.argument_name(err.field)
    message = str(err)
    if method.message_names_argument:
        message = re.sub(rf"\b{re.escape(err.field)}\b", name, message)
        # Other fields a message mentions are backticked (`rank`), as in the help texts.
        fields_ = {o.field: o.name for o in options(method)}
        message = _BACKTICKED.sub(lambda m: fields_.get(m.group(1), m.group(0)), message)
    return f"Invalid {name}: {message}"


def changed_arguments(method: Method, args: Any) -> list[str]:
    """Names of ``method``'s arguments that differ from their defaults (optional ones count when non-empty)."""
    return [
        o.name
        for o in options(method)
        if (bool(getattr(args, o.name)) if o.optional else getattr(args, o.name) != o.default)
    ]


def arguments_table(method: Method) -> str:
    """The markdown table of ``method``'s arguments (name, type, default, help)."""
    lines = ["| Argument | Type | Default | Meaning |", "|---|---|---|---|"]
    for o in options(method):
        help_text = o.help.replace("|", "\\|")
        lines.append(f"| `{o.name}` | {_type_name(o.type)} | `{o.default}` | {help_text} |")
    return "\n".join(lines) + "\n"


def arguments_markdown(methods: tuple[Method, ...]) -> str:
    """docs/arguments.md: one section per method."""
    sources = " and ".join(f"`{m.config_class.__name__}`" for m in methods)
    sections = []
    for index, method in enumerate(methods):
        lines = [f"# `{method.prefix}*` arguments", "", method.docs_intro]
        if index == 0:
            lines.append(f"Generated from the fields of {sources} (their `help` metadata) by `make docs`.")
        sections.append("\n".join([*lines, "", arguments_table(method)]))
    return "\n".join(sections)


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " / ".join(str(c) for c in get_args(hint))
    if get_origin(hint) in (Union, UnionType):
        return " or ".join("None" if a is type(None) else _type_name(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))
