"""Helpers the methods' trainer hooks share."""

from __future__ import annotations

from typing import Any


def add_callback_first(trainer: Any, callback_class: type) -> None:
    """Put one ``callback_class`` instance first in the trainer's callbacks, unless it already has one.

    First in line, so the values it adds to a log reach the reporting callbacks after it.
    """
    callbacks = trainer.callback_handler.callbacks
    if not any(isinstance(cb, callback_class) for cb in callbacks):
        callbacks.insert(0, callback_class())
