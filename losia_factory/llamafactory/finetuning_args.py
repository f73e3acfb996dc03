"""LLaMA-Factory's FinetuningArguments extended with ``finetuning_type: losia`` / ``pilora`` and their fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from .arguments import METHOD, LosiaArguments, build_losia_config
from .checks import check_pilora_stage, check_stage
from .pilora_arguments import PILORA_METHOD, PiloraArguments, build_pilora_config

BASE_METHODS = ("lora", "oft", "freeze", "full")


def _changed_fields(args, mixin: type, optional_none: tuple[str, ...] = ()) -> list[str]:
    """Names of ``mixin``'s fields that differ from their defaults (fields defaulting to None count when set)."""
    return [f.name for f in fields(mixin) if getattr(args, f.name) != f.default and f.name not in optional_none] + [
        name for name in optional_none if getattr(args, name)
    ]


def extend_finetuning_arguments(base: type) -> type:
    """Subclass of LLaMA-Factory's ``FinetuningArguments`` that accepts ``losia`` and ``pilora``.

    LLaMA-Factory's own ``__post_init__`` checks run with ``finetuning_type`` read as ``full`` for LoSiA (it saves a
    full model and shares full fine-tuning's constraints) and as ``lora`` for PiLoRA (it saves a LoRA adapter); then
    the method's fields are validated into ``self.losia_config`` / ``self.pilora_config``. Setting a ``losia_*`` or
    ``pilora_*`` field with another method is an error, so a typo in ``finetuning_type`` cannot silently train
    something else.
    """

    @dataclass
    class FinetuningArguments(base, LosiaArguments, PiloraArguments):
        finetuning_type: Literal["lora", "oft", "freeze", "full", "losia", "pilora"] = field(
            default="lora",
            metadata={
                "help": "Which fine-tuning method to use (losia: LoSiA / LoSiA-Pro subnet training; pilora: "
                "importance-aware LoRA ranks)."
            },
        )

        def __post_init__(self) -> None:
            method = self.finetuning_type
            if method == METHOD:
                check_stage(self)
                self.finetuning_type = "full"
            elif method == PILORA_METHOD:
                check_pilora_stage(self)
                self.finetuning_type = "lora"
            try:
                super().__post_init__()
            finally:
                self.finetuning_type = method
            self.losia_config = build_losia_config(self) if method == METHOD else None
            self.pilora_config = build_pilora_config(self) if method == PILORA_METHOD else None
            for own_method, mixin, optional in (
                (METHOD, LosiaArguments, ("losia_extra_modules",)),
                (PILORA_METHOD, PiloraArguments, ()),
            ):
                changed = [] if method == own_method else _changed_fields(self, mixin, optional)
                if changed:
                    raise ValueError(
                        f"{', '.join(changed)} only apply with `finetuning_type: {own_method}` (got finetuning_type: "
                        f"{method}). Set finetuning_type: {own_method} or remove them."
                    )

    FinetuningArguments.__module__ = base.__module__
    FinetuningArguments.__qualname__ = base.__qualname__
    FinetuningArguments.__doc__ = base.__doc__
    FinetuningArguments.losia_base = base
    return FinetuningArguments
