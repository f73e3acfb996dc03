"""Configuration of a LoSiA run (the algorithm's hyper-parameters, nothing about the training loop)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch

from .errors import ConfigError

IMPORTANCE_KINDS = ("sensitivity", "gradient")
MODES = ("async", "sync", "once", "fixed")
STRATEGIES = ("best", "input_first", "output_first")
ADAM_RESETS = ("moments", "state")
OUTPUT_ORDERS = ("first", "last")
# A module path inside a model: identifiers or list indices joined by dots ("model.layers", "transformer.h").
_DOTTED_PATH = re.compile(r"[A-Za-z_0-9]+(\.[A-Za-z_0-9]+)*")
IMPORTANCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LosiaConfigError(ConfigError):
    """A bad LosiaConfig value; ``field`` names the offending field."""


@dataclass
class LosiaConfig:
    """Hyper-parameters of LoSiA (paper sections 3.2-3.3) and LoSiA-Pro (section 3.3.1).

    Each field's ``help`` metadata is the user-facing text of the option (LLaMA-Factory argument, web UI, docs);
    backticked field names in it are rewritten to the option names there. These notes add the details.

    Args:
        rank_factor: Rank factor p in (0, 1]. Each target weight of shape (out, in) trains one block of
            floor(p*out) output neurons x floor(p*in) input neurons (at least 1 x 1).
        time_slot: Time slot T >= 1, in optimizer steps. A group measures importance for T steps, reselects its
            subnet, then rewarms its learning rate for T steps.
        output_rank_factor: Output-layer factor p_o in [0, 1]. The output layer (lm_head) trains floor(p_o*vocab)
            output neurons with all input neurons, as one more group. 0 leaves the output layer frozen; 1 trains it
            densely on the base schedule, outside the groups (the paper's FFTO variant). When the output layer
            shares its weight with the input embedding, both uses contribute to its gradient and importance.
        importance: "sensitivity" (|W*G - (W*G)^2/2| with EMA smoothing and uncertainty, Eqs. 3-6) or
            "gradient" (|G| of the window's last step, with no EMA buffers; the paper's GL ablation).
        ema_beta1: EMA factor of the importance (Eq. 4), in (0, 1).
        ema_beta2: EMA factor of the importance uncertainty (Eq. 5), in (0, 1).
        mode: "async" (one group measures per time slot, the paper's method), "sync" (all groups measure in the
            same slot and reselect together; the SL ablation), "once" (each group localizes once, in its first
            slot, and keeps that subnet; the ReLO ablation) or "fixed" (the random initial subnets are never
            reselected).
        pro: Use LoSiA-Pro: the linear layers save only the selected input neurons and compute only the block
            gradient. False uses the plain reference path (full weight gradient, sliced).
        target_modules: Which linear layers inside each decoder layer are trained. "all" selects every nn.Linear;
            otherwise a name matches when it equals the module's last name component (e.g. "q_proj") or matches
            its dotted path inside the layer as an fnmatch pattern (e.g. "self_attn.*").
        extra_trainable: Names of parameters trained fully with plain AdamW next to the subnets. An entry without
            wildcards becomes the pattern ``*entry*`` (every parameter whose name contains it); fnmatch patterns
            (e.g. "*.bias") are kept. Parameters of LoSiA target weights cannot be listed.
        selection: Greedy localization strategy (Algorithm 1): "input_first", "output_first" or "best" (keeps the
            block with the larger total score).
        importance_dtype: Dtype of the importance EMA buffers of the measuring group: "float32", "bfloat16" or
            "float16".
        layers_path: Dotted path of the nn.ModuleList holding the decoder layers (e.g. "model.layers"). Empty
            means found automatically (the ModuleList with the most parameters).
        seed: Seed of the random initial subnets. Every process with the same seed picks the same subnets.
        rewarm: Rewarm a group's learning rate linearly over the T steps after each of its reselections (Eq. 8).
            False keeps the base schedule throughout (the paper's WDS ablation).
        adam_reset: What a reselection clears in the group's Adam state (Algorithm 2, line 34): "moments" zeroes
            the first and second moments and keeps the step count, as the authors' code does (bias correction
            continues from the step reached); "state" drops the whole state, so bias correction restarts.
        output_order: Where the output layer's group stands in the measuring order: "first" (it measures in the
            first slot, as in the authors' code) or "last" (after every decoder layer).
        max_consecutive_nonfinite_steps: An optimizer step whose block, extra or importance gradients hold NaN or
            Inf is skipped (nothing is written; the timeline still advances, see docs/faults.md); this many skipped
            steps in a row stop the run with an error. At least 1.
    """

    rank_factor: float = field(
        default=0.125,
        metadata={
            "help": "Rank factor p in (0, 1]: every target linear (out x in) trains a floor(p*out) x floor(p*in) "
            "subnet block. The paper uses 1/8."
        },
    )
    time_slot: int = field(
        default=100,
        metadata={
            "help": "Time slot T (optimizer steps): a layer measures importance for T steps, reselects its subnet, "
            "then rewarms its learning rate for T steps. Paper: 100 (MetaMathQA), 150 (code, Alpaca), 50 "
            "(commonsense)."
        },
    )
    output_rank_factor: float = field(
        default=0.125,
        metadata={
            "help": "Output-layer factor p_o in [0, 1]: lm_head trains floor(p_o*vocab) output neurons with all "
            "inputs, as one more layer group (a tied input embedding's gradient counts too). 0 keeps lm_head "
            "frozen; 1 trains it densely on the base schedule (FFTO). Paper: 1/64 (Gemma-2B), 1/8 (LLaMA-2 7B), "
            "1 (13B)."
        },
    )
    importance: Literal["sensitivity", "gradient"] = field(
        default="sensitivity",
        metadata={
            "help": "Importance score: 'sensitivity' (|W*G - (W*G)^2/2|, paper Eq. 3, smoothed by Eqs. 4-6) or "
            "'gradient' (|G| of the time slot's last step, no buffers: the GL ablation)."
        },
    )
    ema_beta1: float = field(default=0.85, metadata={"help": "EMA factor of the importance (paper Eq. 4), in (0, 1)."})
    ema_beta2: float = field(
        default=0.85, metadata={"help": "EMA factor of the importance uncertainty (paper Eq. 5), in (0, 1)."}
    )
    mode: Literal["async", "sync", "once", "fixed"] = field(
        default="async",
        metadata={
            "help": "Reselection schedule: 'async' (the paper: one layer at a time), 'sync' (all layers together, SL "
            "ablation), 'once' (localize once, ReLO ablation), 'fixed' (keep the random initial subnets)."
        },
    )
    pro: bool = field(
        default=True,
        metadata={
            "help": "Use LoSiA-Pro: linear layers save only the selected input activations and compute only the "
            "subnet gradient (same updates, faster, less memory). False runs the plain reference path."
        },
    )
    target_modules: tuple[str, ...] = field(
        default=("all",),
        metadata={
            "help": "Linear layers trained inside each decoder layer: 'all', or comma-separated names such as "
            "'q_proj,v_proj' or fnmatch patterns of the path inside the layer such as 'self_attn.*'."
        },
    )
    extra_trainable: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Comma-separated parameter names trained fully next to the subnets, e.g. 'norm' (all norms) or "
            "'embed_tokens'. A name without wildcards matches every parameter containing it; fnmatch patterns "
            "such as '*.bias' are used as given."
        },
    )
    selection: Literal["best", "input_first", "output_first"] = field(
        default="best",
        metadata={
            "help": "Greedy subnet localization: 'input_first' (paper Algorithm 1), 'output_first', or 'best' "
            "(keep the block with the larger total score, the paper's default)."
        },
    )
    importance_dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32",
        metadata={"help": "Dtype of the importance buffers of the layer being measured (bfloat16 halves them)."},
    )
    layers_path: str = field(
        default="",
        metadata={
            "help": "Dotted path of the decoder-layer list (e.g. 'model.layers'); found automatically when unset."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of the random initial subnets (the same on every process)."})
    rewarm: bool = field(
        default=True,
        metadata={
            "help": "Rewarm each layer group's learning rate linearly over the T steps after its reselection (paper "
            "Eq. 8). False keeps the base schedule (the WDS ablation)."
        },
    )
    adam_reset: Literal["moments", "state"] = field(
        default="moments",
        metadata={
            "help": "What a reselection clears in the layer group's Adam state (paper Algorithm 2): 'moments' zeroes "
            "the moments and keeps the step count (the authors' code); 'state' also restarts the step count, so "
            "bias correction starts again."
        },
    )
    output_order: Literal["first", "last"] = field(
        default="first",
        metadata={
            "help": "When lm_head measures importance: 'first' (in the first time slot, as in the authors' code, so "
            "it leaves its random rows after T steps) or 'last' (after every decoder layer)."
        },
    )
    max_consecutive_nonfinite_steps: int = field(
        default=10,
        metadata={
            "help": "A step whose gradients hold NaN or Inf is skipped (weights, optimizer state and importance stay "
            "untouched) and counted in losia_log.jsonl; this many skipped steps in a row stop the run with an error."
        },
    )

    def __post_init__(self) -> None:
        self.target_modules = _name_list("target_modules", self.target_modules)
        self.extra_trainable = tuple(_as_name_pattern(t) for t in _name_list("extra_trainable", self.extra_trainable))

        if not _is_number(self.rank_factor) or not 0.0 < self.rank_factor <= 1.0:
            raise LosiaConfigError(
                "rank_factor", f"rank_factor must be a number in (0, 1], got {self.rank_factor!r}; the paper uses 1/8."
            )
        if isinstance(self.time_slot, bool) or not isinstance(self.time_slot, int) or self.time_slot < 1:
            raise LosiaConfigError(
                "time_slot", f"time_slot must be an integer >= 1 (optimizer steps), got {self.time_slot!r}."
            )
        if not _is_number(self.output_rank_factor) or not 0.0 <= self.output_rank_factor <= 1.0:
            raise LosiaConfigError(
                "output_rank_factor",
                f"output_rank_factor must be a number in [0, 1] (0 leaves the output layer frozen), got "
                f"{self.output_rank_factor!r}.",
            )
        if self.importance not in IMPORTANCE_KINDS:
            raise LosiaConfigError(
                "importance", f"importance must be one of {IMPORTANCE_KINDS}, got {self.importance!r}."
            )
        for name in ("ema_beta1", "ema_beta2"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 < value < 1.0:
                raise LosiaConfigError(name, f"{name} must be a number in (0, 1), got {value!r}; the paper uses 0.85.")
        if self.mode not in MODES:
            raise LosiaConfigError("mode", f"mode must be one of {MODES}, got {self.mode!r}.")
        if not isinstance(self.pro, bool):
            raise LosiaConfigError("pro", f"pro must be True or False, got {self.pro!r}.")
        if not self.target_modules:
            raise LosiaConfigError(
                "target_modules",
                "target_modules must name at least one linear layer ('all', 'q_proj', 'self_attn.*'), got nothing.",
            )
        if self.selection not in STRATEGIES:
            raise LosiaConfigError("selection", f"selection must be one of {STRATEGIES}, got {self.selection!r}.")
        if self.importance_dtype not in IMPORTANCE_DTYPES:
            raise LosiaConfigError(
                "importance_dtype",
                f"importance_dtype must be one of {tuple(IMPORTANCE_DTYPES)}, got {self.importance_dtype!r}.",
            )
        if not isinstance(self.layers_path, str) or (
            self.layers_path and not _DOTTED_PATH.fullmatch(self.layers_path)
        ):
            raise LosiaConfigError(
                "layers_path",
                "layers_path must be a dotted module path such as 'model.layers', or empty to find the decoder layers "
                f"automatically, got {self.layers_path!r}.",
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise LosiaConfigError("seed", f"seed must be an integer in [0, 2**63), got {self.seed!r}.")
        if not isinstance(self.rewarm, bool):
            raise LosiaConfigError("rewarm", f"rewarm must be True or False, got {self.rewarm!r}.")
        if self.adam_reset not in ADAM_RESETS:
            raise LosiaConfigError("adam_reset", f"adam_reset must be one of {ADAM_RESETS}, got {self.adam_reset!r}.")
        if self.output_order not in OUTPUT_ORDERS:
            raise LosiaConfigError(
                "output_order", f"output_order must be one of {OUTPUT_ORDERS}, got {self.output_order!r}."
            )
        limit = self.max_consecutive_nonfinite_steps
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise LosiaConfigError(
                "max_consecutive_nonfinite_steps",
                f"max_consecutive_nonfinite_steps must be an integer >= 1 (skipped steps in a row before the run "
                f"stops), got {limit!r}.",
            )

    @property
    def ema_betas(self) -> tuple[float, float]:
        """``(ema_beta1, ema_beta2)``, the EMA factors of the importance and of its uncertainty."""
        return float(self.ema_beta1), float(self.ema_beta2)

    @property
    def torch_importance_dtype(self) -> torch.dtype:
        """The importance buffer dtype as a ``torch.dtype``."""
        return IMPORTANCE_DTYPES[self.importance_dtype]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (tuples become lists) for JSON and checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LosiaConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ``ValueError`` naming them.

        Configs saved before the EMA factors became two fields hold ``ema_betas: [beta1, beta2]``; it is read too.
        """
        values = dict(values)
        if "ema_betas" in values:
            betas = list(values.pop("ema_betas"))
            if len(betas) != 2:
                raise LosiaConfigError("ema_beta1", f"ema_betas must hold two numbers, got {betas!r}.")
            values.setdefault("ema_beta1", betas[0])
            values.setdefault("ema_beta2", betas[1])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown LosiaConfig fields {unknown}; known fields are {sorted(known)}.")
        return cls(**values)


def _name_list(name: str, value: Any) -> tuple[str, ...]:
    """A tuple of stripped, non-empty names from a comma-separated string or a sequence of strings."""
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, (tuple, list)) and all(isinstance(s, str) and s.strip() for s in value):
        return tuple(s.strip() for s in value)
    raise LosiaConfigError(
        name, f"{name} must be comma-separated non-empty names (e.g. 'q_proj,v_proj'), got {value!r}."
    )


def _as_name_pattern(name: str) -> str:
    """A plain parameter name (no fnmatch wildcard) matches every parameter whose name contains it."""
    if not isinstance(name, str) or not name or any(c in name for c in "*?["):
        return name  # patterns as given; non-strings and empty entries are refused by the validation
    return f"*{name}*"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
