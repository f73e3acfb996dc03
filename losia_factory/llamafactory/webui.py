"""The registered methods in the LLaMA Board web UI: method choices, one accordion each, labels, casts and alerts.

Widgets follow each option's type: a Literal is a dropdown, a bool a checkbox, an int or float a slider when the
method gives a range (a number box otherwise), a string a text box. Element ids are the argument names, plus
``<method>_tab`` and ``<method>_note`` for the accordion and its note.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin

from .arguments import Option, options
from .method import Method, UiGetter
from .methods import REGISTERED

LANGS = ("en", "ru", "zh", "ko", "ja")


def _per_lang(texts: Mapping[str, Any]) -> dict[str, Any]:
    """``texts`` for every language of LLaMA Board, the English entry standing in for a missing one."""
    return {lang: texts.get(lang, texts["en"]) for lang in LANGS}


def input_names(method: Method) -> tuple[str, ...]:
    """The element ids of ``method``'s arguments (every argument has one, in the Train tab)."""
    return tuple(o.name for o in options(method))


def method_locales(method: Method) -> dict[str, dict[str, dict[str, str]]]:
    """LLaMA Board's ``{element: {lang: {"label"/"info"/"value": ...}}}`` for ``method``'s accordion."""
    ui = method.ui
    table = {
        f"{method.name}_tab": {lang: {"label": text} for lang, text in _per_lang(ui.title).items()},
        f"{method.name}_note": {lang: {"value": text} for lang, text in _per_lang(ui.note).items()},
    }
    for option in options(method):
        # Without a translation the element shows its argument name and the field's help, in every language.
        given = ui.labels.get(option.field, {})
        table[option.name] = _per_lang({"en": {"label": option.name, "info": option.help}, **given})
    return table


def locales() -> dict[str, dict[str, dict[str, str]]]:
    """The labels of every registered method, merged into LLaMA Board's ``LOCALES``."""
    return {name: entry for method in REGISTERED for name, entry in method_locales(method).items()}


def alerts() -> dict[str, dict[str, str]]:
    """The alerts of every registered method, merged into LLaMA Board's ``ALERTS``."""
    return {key: _per_lang(texts) for method in REGISTERED for key, texts in method.ui.alerts.items()}


def alert_text(key: str, lang: str) -> str:
    """The message of alert ``key`` in ``lang`` (English when the language is unknown)."""
    texts = alerts()[key]
    return texts.get(lang, texts["en"])


def create_accordion(method: Method) -> dict[str, Any]:
    """``method``'s accordion of the Train tab (hidden until it is the chosen fine-tuning method)."""
    import gradio as gr

    by_field = {o.field: o for o in options(method)}
    placed = {name for row in method.ui.rows for name in row}
    rows = [*method.ui.rows, tuple(name for name in by_field if name not in placed)]
    created: dict[str, Any] = {}
    with gr.Accordion(open=True, visible=False, elem_id=f"{method.name}_tab") as tab:
        created[f"{method.name}_tab"] = tab
        created[f"{method.name}_note"] = gr.Markdown()
        for row in rows:
            if not row:
                continue
            with gr.Row():
                for name in row:
                    option = by_field[name]
                    created[option.name] = _widget(option, method.ui.sliders.get(name))
    return created


def _widget(option: Option, slider: tuple[float, float, float] | None) -> Any:
    import gradio as gr

    kind, default = option.type, option.default
    if get_origin(kind) is Literal:
        return gr.Dropdown(list(get_args(kind)), value=default, elem_id=option.name)
    if kind is bool:
        return gr.Checkbox(value=default, elem_id=option.name)
    if kind in (int, float) and slider is not None:
        low, high, step = slider
        # Rounded so that a default such as 1/3 shows (and is sent back) as the slider can hold it.
        return gr.Slider(low, high, value=round(default, 4), step=step, elem_id=option.name)
    if kind in (int, float):
        return gr.Number(value=default, precision=0 if kind is int else None, elem_id=option.name)
    return gr.Textbox(value=default or "", elem_id=option.name)


def train_args(method: Method, get: UiGetter) -> dict[str, Any]:
    """``method``'s training arguments from the Train tab values (``get("train.<name>")``), cast to their types.

    Gradio hands numbers back as floats and empty text boxes as "", which an optional argument reads as unset.
    """
    args = {}
    for option in options(method):
        value = get(f"train.{option.name}")
        if option.type in (int, float):
            value = option.type(value)
        elif option.optional:
            value = value or None
        args[option.name] = value
    return args


def extend_train_tab(create_train_tab: Callable) -> Callable:
    """Wrap LLaMA Board's ``create_train_tab`` so the Train tab also holds the registered methods' accordions.

    The accordions are built when the tab asks for its base elements (its first statement), so they sit at the top
    of the tab and their fields join the inputs of Preview, Start, Save and Load.
    """

    def wrapped(engine) -> dict[str, Any]:
        manager = engine.manager
        original_get_base_elems = manager.get_base_elems
        created: dict[str, Any] = {}

        def get_base_elems():
            elems = original_get_base_elems()
            if not created:
                for method in REGISTERED:
                    created.update(create_accordion(method))
                elems.update(created[name] for method in REGISTERED for name in input_names(method))
            return elems

        manager.get_base_elems = get_base_elems
        try:
            elem_dict = create_train_tab(engine)
        finally:
            manager.get_base_elems = original_get_base_elems
        if not created:
            raise RuntimeError("LLaMA Board's create_train_tab no longer asks for its base elements first.")
        _wire_method_switch(manager, created, elem_dict)
        elem_dict.update(created)
        return elem_dict

    wrapped.__wrapped__ = create_train_tab  # type: ignore[attr-defined]
    return wrapped


def _wire_method_switch(manager, created: dict[str, Any], train: dict[str, Any]) -> None:
    """Show the chosen method's accordion; turn DeepSpeed offload off for methods that do not support it."""
    import gradio as gr

    finetuning_type = manager.get_elem_by_id("top.finetuning_type")

    def on_method(chosen: str):
        no_offload = any(m.name == chosen and not m.ui.allows_offload for m in REGISTERED)
        offload = gr.update(value=False, interactive=False) if no_offload else gr.update(interactive=True)
        return (*(gr.update(visible=m.name == chosen) for m in REGISTERED), offload)

    outputs = [*(created[f"{m.name}_tab"] for m in REGISTERED), train["ds_offload"]]
    finetuning_type.change(on_method, [finetuning_type], outputs, queue=False)
