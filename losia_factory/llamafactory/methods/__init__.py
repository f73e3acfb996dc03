"""The registered fine-tuning methods, one description module each; the integration loops over ``REGISTERED``.

Adding a method: write a module here that builds a :class:`~losia_factory.llamafactory.method.Method` and add it
to ``REGISTERED``. Its arguments, web UI widgets and argument reference follow from its config dataclass.
"""

from __future__ import annotations

from ..method import Method
from .losia import LOSIA
from .pilora import PILORA

REGISTERED: tuple[Method, ...] = (LOSIA, PILORA)


def method_named(name: str | None) -> Method | None:
    """The registered method whose ``finetuning_type`` is ``name``, or None (LLaMA-Factory's own methods)."""
    return next((m for m in REGISTERED if m.name == name), None)


__all__ = ["LOSIA", "PILORA", "REGISTERED", "method_named"]
