"""LLaMA-Factory's FinetuningArguments extended with every registered method and its arguments."""

# No ``from __future__ import annotations`` here: the ``finetuning_type`` annotation is built at run time from the
# registered methods, and HfArgumentParser must see the Literal itself, not a name it cannot resolve.

from dataclasses import dataclass, field
from typing import Any, Literal

from .arguments import argument_dataclass, build_config, changed_arguments
from .checks import check_stage
from .methods import REGISTERED, method_named

BASE_METHODS = ("lora", "oft", "freeze", "full")


def extend_finetuning_arguments(base: type) -> type:
    """Subclass of LLaMA-Factory's ``FinetuningArguments`` that accepts every registered method.

    LLaMA-Factory's own ``__post_init__`` checks run with ``finetuning_type`` read as the method's ``runs_as``
    (``full`` for LoSiA, which saves a full model; ``lora`` for PiLoRA, which saves a LoRA adapter); then the chosen
    method's arguments are validated into ``self.<method>_config`` (None for the others). Setting another method's
    argument is an error, so a typo in ``finetuning_type`` cannot silently train something else.
    """
    method_type: Any = Literal[(*BASE_METHODS, *(m.name for m in REGISTERED))]
    method_help = "; ".join(f"{m.name}: {m.summary}" for m in REGISTERED)
    mixins = tuple(argument_dataclass(m) for m in REGISTERED)

    @dataclass
    class FinetuningArguments(base, *mixins):  # type: ignore[misc,valid-type]
        finetuning_type: method_type = field(
            default="lora", metadata={"help": f"Which fine-tuning method to use ({method_help})."}
        )

        def __post_init__(self) -> None:
            requested = self.finetuning_type
            chosen = method_named(requested)
            if chosen is not None:
                check_stage(chosen, self)
                self.finetuning_type = chosen.runs_as
            try:
                super().__post_init__()
            finally:
                self.finetuning_type = requested
            for method in REGISTERED:
                setattr(self, method.config_attribute, build_config(method, self) if method is chosen else None)
            for method in REGISTERED:
                changed = [] if method is chosen else changed_arguments(method, self)
                if changed:
                    raise ValueError(
                        f"{', '.join(changed)} only apply with `finetuning_type: {method.name}` (got finetuning_type: "
                        f"{requested}). Set finetuning_type: {method.name} or remove them."
                    )
            if chosen is not None and chosen.check_arguments is not None:
                chosen.check_arguments(self)  # after the config is validated, so the rules read checked values

    FinetuningArguments.__module__ = base.__module__
    FinetuningArguments.__qualname__ = base.__qualname__
    FinetuningArguments.__doc__ = base.__doc__
    FinetuningArguments.losia_base = base  # type: ignore[attr-defined]
    return FinetuningArguments
