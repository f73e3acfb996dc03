"""The error every method configuration raises for a bad value, naming the field so callers can rephrase it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value; ``field`` names the offending dataclass field.

    Front ends that expose the field under another name (LLaMA-Factory's ``losia_*`` / ``pilora_*`` arguments)
    catch it and restate the message with their own name, so users see the option they actually set.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
