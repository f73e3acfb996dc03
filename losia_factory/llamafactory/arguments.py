"""The ``losia_*`` fields of LLaMA-Factory's FinetuningArguments and their mapping to :class:`LosiaConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..core import LosiaConfig, LosiaConfigError

METHOD = "losia"
# LosiaConfig field -> the LLaMA-Factory argument(s) that set it.
CONFIG_TO_ARGUMENT = {
    "rank_factor": "losia_rank_factor",
    "time_slot": "losia_time_slot",
    "output_rank_factor": "losia_output_rank_factor",
    "importance": "losia_importance",
    "ema_betas": "losia_ema_beta1 / losia_ema_beta2",
    "mode": "losia_mode",
    "pro": "losia_pro",
    "target_modules": "losia_target",
    "extra_trainable": "losia_extra_modules",
    "selection": "losia_selection",
    "importance_dtype": "losia_importance_dtype",
    "layers_path": "losia_layers_path",
    "seed": "losia_seed",
    "rewarm": "losia_rewarm",
    "adam_reset": "losia_adam_reset",
    "output_order": "losia_output_order",
}


@dataclass
class LosiaArguments:
    r"""Arguments of LoSiA / LoSiA-Pro training (``finetuning_type: losia``)."""

    losia_rank_factor: float = field(
        default=0.125,
        metadata={
            "help": "Rank factor p in (0, 1]: every target linear (out x in) trains a floor(p*out) x floor(p*in) "
            "subnet block. The paper uses 1/8."
        },
    )
    losia_time_slot: int = field(
        default=100,
        metadata={
            "help": "Time slot T (optimizer steps): a layer measures importance for T steps, reselects its subnet, "
            "then rewarms its learning rate for T steps. Paper: 100 (MetaMathQA), 150 (code, Alpaca), 50 "
            "(commonsense)."
        },
    )
    losia_output_rank_factor: float = field(
        default=0.125,
        metadata={
            "help": "Output-layer factor p_o in [0, 1]: lm_head trains floor(p_o*vocab) output neurons with all "
            "inputs, as one more layer group (a tied input embedding's gradient counts too). 0 keeps lm_head "
            "frozen; 1 trains it densely on the base schedule (FFTO). Paper: 1/64 (Gemma-2B), 1/8 (LLaMA-2 7B), "
            "1 (13B)."
        },
    )
    losia_importance: Literal["sensitivity", "gradient"] = field(
        default="sensitivity",
        metadata={
            "help": "Importance score: 'sensitivity' (|W*G - (W*G)^2/2|, paper Eq. 3, smoothed by Eqs. 4-6) or "
            "'gradient' (|G| of the time slot's last step, no buffers: the GL ablation)."
        },
    )
    losia_ema_beta1: float = field(
        default=0.85,
        metadata={"help": "EMA factor of the importance (paper Eq. 4), in (0, 1)."},
    )
    losia_ema_beta2: float = field(
        default=0.85,
        metadata={"help": "EMA factor of the importance uncertainty (paper Eq. 5), in (0, 1)."},
    )
    losia_mode: Literal["async", "sync", "once", "fixed"] = field(
        default="async",
        metadata={
            "help": "Reselection schedule: 'async' (the paper: one layer at a time), 'sync' (all layers together, SL "
            "ablation), 'once' (localize once, ReLO ablation), 'fixed' (keep the random initial subnets)."
        },
    )
    losia_pro: bool = field(
        default=True,
        metadata={
            "help": "Use LoSiA-Pro: linear layers save only the selected input activations and compute only the "
            "subnet gradient (same updates, faster, less memory). False runs the plain reference path."
        },
    )
    losia_target: str = field(
        default="all",
        metadata={
            "help": "Linear layers trained inside each decoder layer: 'all', or comma-separated names such as "
            "'q_proj,v_proj' or fnmatch patterns of the path inside the layer such as 'self_attn.*'."
        },
    )
    losia_extra_modules: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated parameter names trained fully next to the subnets, e.g. 'norm' (all norms) or "
            "'embed_tokens'. A name without wildcards matches every parameter containing it; fnmatch patterns "
            "such as '*.bias' are used as given."
        },
    )
    losia_selection: Literal["best", "input_first", "output_first"] = field(
        default="best",
        metadata={
            "help": "Greedy subnet localization: 'input_first' (paper Algorithm 1), 'output_first', or 'best' "
            "(keep the block with the larger total score, the paper's default)."
        },
    )
    losia_importance_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32",
        metadata={"help": "Dtype of the importance buffers of the layer being measured (bfloat16 halves them)."},
    )
    losia_layers_path: str | None = field(
        default=None,
        metadata={
            "help": "Dotted path of the decoder-layer list (e.g. 'model.layers'); found automatically when unset."
        },
    )
    losia_seed: int = field(
        default=42,
        metadata={"help": "Seed of the random initial subnets (the same on every process)."},
    )
    losia_rewarm: bool = field(
        default=True,
        metadata={
            "help": "Rewarm each layer group's learning rate linearly over the T steps after its reselection (paper "
            "Eq. 8). False keeps the base schedule (the WDS ablation)."
        },
    )
    losia_adam_reset: Literal["moments", "state"] = field(
        default="moments",
        metadata={
            "help": "What a reselection clears in the layer group's Adam state (paper Algorithm 2): 'moments' zeroes "
            "the moments and keeps the step count (the authors' code); 'state' also restarts the step count, so "
            "bias correction starts again."
        },
    )
    losia_output_order: Literal["first", "last"] = field(
        default="first",
        metadata={
            "help": "When lm_head measures importance: 'first' (in the first time slot, as in the authors' code, so "
            "it leaves its random rows after T steps) or 'last' (after every decoder layer)."
        },
    )


def extra_module_patterns(value: str | None) -> tuple[str, ...]:
    """``losia_extra_modules`` -> fnmatch patterns over parameter names."""
    if not value:
        return ()
    patterns = []
    for item in (s.strip() for s in value.split(",")):
        if item:
            patterns.append(item if any(c in item for c in "*?[") else f"*{item}*")
    return tuple(patterns)


def build_losia_config(args: LosiaArguments) -> LosiaConfig:
    """The :class:`LosiaConfig` described by the ``losia_*`` fields.

    Raises:
        ValueError: naming the ``losia_*`` argument when a value is invalid.
    """
    try:
        return LosiaConfig(
            rank_factor=args.losia_rank_factor,
            time_slot=args.losia_time_slot,
            output_rank_factor=args.losia_output_rank_factor,
            importance=args.losia_importance,
            ema_betas=(args.losia_ema_beta1, args.losia_ema_beta2),
            mode=args.losia_mode,
            pro=args.losia_pro,
            target_modules=args.losia_target,
            extra_trainable=extra_module_patterns(args.losia_extra_modules),
            selection=args.losia_selection,
            importance_dtype=args.losia_importance_dtype,
            layers_path=args.losia_layers_path or "",
            seed=args.losia_seed,
            rewarm=args.losia_rewarm,
            adam_reset=args.losia_adam_reset,
            output_order=args.losia_output_order,
        )
    except LosiaConfigError as err:
        raise ValueError(argument_error(err)) from None


def argument_error(err: LosiaConfigError) -> str:
    """Rephrase a core configuration error with the LLaMA-Factory argument name."""
    return f"Invalid {CONFIG_TO_ARGUMENT.get(err.field, err.field)}: {err}"


def arguments_table(mixin: type | None = None) -> str:
    """The markdown table of an argument dataclass (default :class:`LosiaArguments`), generated from its fields."""
    mixin = mixin or LosiaArguments
    lines = ["| Argument | Type | Default | Meaning |", "|---|---|---|---|"]
    hints = get_type_hints(mixin)
    for f in fields(mixin):
        help_text = f.metadata["help"].replace("|", "\\|")
        lines.append(f"| `{f.name}` | {_type_name(hints[f.name])} | `{f.default}` | {help_text} |")
    return "\n".join(lines) + "\n"


def arguments_markdown() -> str:
    """docs/arguments.md: the ``losia_*`` and the ``pilora_*`` arguments."""
    from .pilora_arguments import PiloraArguments

    header = [
        "# `losia_*` arguments",
        "",
        "Set `finetuning_type: losia` and any of these in a LLaMA-Factory YAML (or `--name value` on the command "
        "line).",
        "Generated from `losia_factory/llamafactory/arguments.py` and `pilora_arguments.py` by `make docs`.",
        "",
    ]
    pilora = [
        "",
        "# `pilora_*` arguments",
        "",
        "Set `finetuning_type: pilora` and any of these (see [pilora.md](pilora.md)).",
        "",
    ]
    return "\n".join(header) + "\n" + arguments_table() + "\n".join(pilora) + "\n" + arguments_table(PiloraArguments)


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " / ".join(str(c) for c in get_args(hint))
    if get_origin(hint) in (Union, UnionType):
        return " or ".join("None" if a is type(None) else _type_name(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))
