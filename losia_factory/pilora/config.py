"""Configuration of a PiLoRA run (importance-aware ranks; the PiLoRA paper, sections 3.2-3.3 and Algorithm 1)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..core.errors import ConfigError

PARTITIONS = ("consistent", "top_half", "cumulative")
STAGE2_INITS = ("fresh", "carry")


class PiloraConfigError(ConfigError):
    """A bad PiloraConfig value; ``field`` names the offending field."""


@dataclass
class PiloraConfig:
    """Hyper-parameters of PiLoRA.

    Args:
        rank: Rank r of the stage-1 LoRA and of the dominant LoRA of stage 2 (paper Table 5: 32).
        supplementary_rank: Rank r' of the supplementary LoRA on the other neurons, at least 1 (paper: 1 or 2).
        alpha: LoRA alpha; both LoRAs use the scaling alpha / r (paper Table 5: 64).
        dropout: Dropout on the adapters' input, in [0, 1) (paper: 0.05).
        interval: K, in optimizer steps: stage 1 scores the neurons on every K-th step (Algorithm 1, line 7).
        probe_steps: Length of stage 1 in optimizer steps; 0 means ``probe_ratio`` of the training steps.
        probe_ratio: Length of stage 1 as a fraction of the training steps when ``probe_steps`` is 0, in (0, 1)
            (the paper runs stage 1 for 1 of 3 epochs).
        partition: How the hit counts become the dominant mask M: "consistent" (the neurons above the mean score in
            more than half of the probes, the paper's default reading), "top_half" (the half of the neurons with the
            most hits, the paper's ablation) or "cumulative" (the fewest neurons holding ``threshold`` of the
            accumulated importance, the paper's Fig. 6).
        threshold: Share of the accumulated importance the dominant neurons hold with ``partition="cumulative"``,
            in (0, 1] (paper: saturates above 0.7).
        init: Stage-2 start: "fresh" (new LoRAs on the pre-trained weight, as Algorithm 1 line 15 reads) or
            "carry" (keep stage 1's update: the dominant LoRA takes its rows exactly, the supplementary LoRA the
            best rank-r' approximation of the other rows).
        target_modules: The linear layers to adapt inside the decoder layers, matched as LoSiA's target_modules
            are (:func:`~losia_factory.core.discovery.matches_target`): "all", a module's last name component
            ("q_proj") or an fnmatch pattern over its dotted path inside the layer ("mlp.*"). Each entry must match
            at least one linear layer.
        seed: Seed of the LoRA initializations.
        max_consecutive_nonfinite_steps: An optimizer step whose adapter gradients hold NaN or Inf is skipped (no
            update, no hit count); this many skipped steps in a row stop the run with an error. At least 1.
    """

    rank: int = field(
        default=32,
        metadata={"help": "Rank r of the stage-1 LoRA and of the dominant-neuron LoRA. Paper (Table 5): 32."},
    )
    supplementary_rank: int = field(
        default=2,
        metadata={"help": "Rank r' of the LoRA on the other (supplementary) neurons, 1 <= r' <= r. Paper: 1 or 2."},
    )
    alpha: float = field(default=64.0, metadata={"help": "LoRA alpha; both LoRAs are scaled by alpha / r. Paper: 64."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapters' input, in [0, 1). Paper: 0.05."})
    interval: int = field(
        default=1,
        metadata={"help": "K: stage 1 scores the output neurons (Eqs. 7-8) on every K-th optimizer step."},
    )
    probe_steps: int = field(
        default=0,
        metadata={"help": "Length of stage 1 in optimizer steps; 0 uses `probe_ratio` of the training steps."},
    )
    probe_ratio: float = field(
        default=1 / 3,
        metadata={
            "help": "Length of stage 1 as a fraction of the training steps when `probe_steps` is 0. The paper runs "
            "stage 1 for 1 of 3 epochs."
        },
    )
    partition: Literal["consistent", "top_half", "cumulative"] = field(
        default="consistent",
        metadata={
            "help": "Dominant neurons: 'consistent' (above the matrix mean in more than half of the probes, the "
            "paper's default), 'top_half' (the half with the most hits) or 'cumulative' (the fewest neurons holding "
            "`threshold` of the accumulated importance)."
        },
    )
    threshold: float = field(
        default=0.7,
        metadata={"help": "Importance share of the dominant neurons with `partition` 'cumulative', in (0, 1]."},
    )
    init: Literal["fresh", "carry"] = field(
        default="fresh",
        metadata={
            "help": "Stage-2 start: 'fresh' LoRAs on the pre-trained weight (Algorithm 1) or 'carry' stage 1's "
            "update into them (exact on dominant rows, best rank-r' approximation elsewhere)."
        },
    )
    target_modules: tuple[str, ...] | str = field(
        default=("q_proj", "k_proj", "v_proj", "up_proj", "down_proj"),
        metadata={"help": "Comma-separated linear layers to adapt, or 'all'. Paper: Q, K, V, Up, Down."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the LoRA initializations."})
    max_consecutive_nonfinite_steps: int = field(
        default=10,
        metadata={
            "help": "A step whose adapter gradients hold NaN or Inf is skipped (no update, no hit count) and counted "
            "in pilora_log.jsonl; this many skipped steps in a row stop the run with an error."
        },
    )

    def __post_init__(self) -> None:
        def bad(name: str, message: str) -> None:
            raise PiloraConfigError(name, f"{name} {message}")

        for name, low in (("rank", 1), ("supplementary_rank", 1), ("interval", 1), ("probe_steps", 0), ("seed", 0)):
            value = getattr(self, name)
            if not _is_integer(value) or value < low:
                hint = " (0: use `probe_ratio`)" if name == "probe_steps" else ""
                bad(name, f"must be an integer >= {low}{hint}, got {value!r}.")
        if self.supplementary_rank > self.rank:
            bad(
                "supplementary_rank",
                f"({self.supplementary_rank}) must not exceed `rank` ({self.rank}): it is the low-capacity "
                "adapter. Lower it or raise `rank`.",
            )
        if not _is_number(self.alpha) or not self.alpha > 0:
            bad("alpha", f"must be a number > 0, got {self.alpha!r}. Paper: 64.")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            bad("dropout", f"must be a number in [0, 1), got {self.dropout!r}. Paper: 0.05.")
        if not _is_number(self.probe_ratio) or not 0 < self.probe_ratio < 1:
            bad("probe_ratio", f"must be a number in (0, 1), got {self.probe_ratio!r}. Paper: 1/3.")
        if self.partition not in PARTITIONS:
            bad("partition", f"must be one of {', '.join(PARTITIONS)}, got {self.partition!r}.")
        if not _is_number(self.threshold) or not 0 < self.threshold <= 1:
            bad("threshold", f"must be a number in (0, 1], got {self.threshold!r}.")
        if self.init not in STAGE2_INITS:
            bad("init", f"must be one of {', '.join(STAGE2_INITS)}, got {self.init!r}.")
        if isinstance(self.target_modules, str):
            names = [n.strip() for n in self.target_modules.split(",") if n.strip()]
            self.target_modules = "all" if names == ["all"] else tuple(names)
        elif isinstance(self.target_modules, (tuple, list)) and all(isinstance(n, str) for n in self.target_modules):
            self.target_modules = tuple(n.strip() for n in self.target_modules if n.strip())
        else:
            bad("target_modules", f"must be comma-separated linear-layer names or 'all', got {self.target_modules!r}.")
        if not self.target_modules:
            bad("target_modules", "must name at least one linear layer (e.g. 'q_proj,v_proj'), or be 'all'.")
        limit = self.max_consecutive_nonfinite_steps
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            bad(
                "max_consecutive_nonfinite_steps",
                f"must be an integer >= 1 (skipped steps in a row before the run stops), got {limit!r}.",
            )

    @property
    def scaling(self) -> float:
        """The scaling alpha / r of both LoRAs (the supplementary one too: every rank direction counts alike)."""
        return self.alpha / self.rank

    def probe_length(self, num_training_steps: int) -> int:
        """Stage-1 length in optimizer steps for a run of ``num_training_steps`` (at least 1 step)."""
        if self.probe_steps:
            return self.probe_steps
        return max(1, round(self.probe_ratio * num_training_steps))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(self.target_modules, tuple):
            data["target_modules"] = list(self.target_modules)
        return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
