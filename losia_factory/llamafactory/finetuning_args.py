"""LLaMA-Factory's FinetuningArguments extended with ``finetuning_type: losia`` and the ``losia_*`` fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from .arguments import METHOD, LosiaArguments, build_losia_config
from .checks import check_stage

BASE_METHODS = ("lora", "oft", "freeze", "full")


def extend_finetuning_arguments(base: type) -> type:
    """Subclass of LLaMA-Factory's ``FinetuningArguments`` that accepts ``losia``.

    LLaMA-Factory's own ``__post_init__`` checks run with ``finetuning_type`` read as ``full`` (LoSiA saves a full
    model and shares full fine-tuning's constraints); then the LoSiA fields are validated into
    ``self.losia_config``. Setting a ``losia_*`` field with another method is an error, so a typo in
    ``finetuning_type`` cannot silently train something else.
    """

    @dataclass
    class FinetuningArguments(base, LosiaArguments):
        finetuning_type: Literal["lora", "oft", "freeze", "full", "losia"] = field(
            default="lora",
            metadata={"help": "Which fine-tuning method to use (losia: LoSiA / LoSiA-Pro subnet training)."},
        )

        def __post_init__(self) -> None:
            method = self.finetuning_type
            if method == METHOD:
                check_stage(self)
                self.finetuning_type = "full"
            try:
                super().__post_init__()
            finally:
                self.finetuning_type = method
            if method == METHOD:
                self.losia_config = build_losia_config(self)
            else:
                self.losia_config = None
                changed = [
                    f.name
                    for f in fields(LosiaArguments)
                    if getattr(self, f.name) != f.default and f.name != "losia_extra_modules"
                ]
                if self.losia_extra_modules:
                    changed.append("losia_extra_modules")
                if changed:
                    raise ValueError(
                        f"{', '.join(changed)} only apply with `finetuning_type: losia` (got finetuning_type: "
                        f"{method}). Set finetuning_type: losia or remove them."
                    )

    FinetuningArguments.__module__ = base.__module__
    FinetuningArguments.__qualname__ = base.__qualname__
    FinetuningArguments.__doc__ = base.__doc__
    FinetuningArguments.losia_base = base
    return FinetuningArguments
