"""The ``pilora_*`` fields of LLaMA-Factory's FinetuningArguments and their mapping to :class:`PiloraConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..pilora import PiloraConfig, PiloraConfigError

PILORA_METHOD = "pilora"
SUPPORTED_STAGES = ("pt", "sft")


@dataclass
class PiloraArguments:
    r"""Arguments of PiLoRA training (``finetuning_type: pilora``)."""

    pilora_rank: int = field(
        default=32,
        metadata={"help": "Rank r of the stage-1 LoRA and of the dominant-neuron LoRA. Paper (Table 5): 32."},
    )
    pilora_supplementary_rank: int = field(
        default=2,
        metadata={"help": "Rank r' of the LoRA on the other (supplementary) neurons, 1 <= r' <= r. Paper: 1 or 2."},
    )
    pilora_alpha: float = field(
        default=64.0,
        metadata={"help": "LoRA alpha; both LoRAs are scaled by alpha / r. Paper: 64."},
    )
    pilora_dropout: float = field(
        default=0.05,
        metadata={"help": "Dropout on the adapters' input, in [0, 1). Paper: 0.05."},
    )
    pilora_interval: int = field(
        default=1,
        metadata={"help": "K: stage 1 scores the output neurons (Eqs. 7-8) on every K-th optimizer step."},
    )
    pilora_probe_steps: int = field(
        default=0,
        metadata={"help": "Length of stage 1 in optimizer steps; 0 uses pilora_probe_ratio of the training steps."},
    )
    pilora_probe_ratio: float = field(
        default=1 / 3,
        metadata={
            "help": "Length of stage 1 as a fraction of the training steps when pilora_probe_steps is 0. The paper "
            "runs stage 1 for 1 of 3 epochs."
        },
    )
    pilora_partition: Literal["consistent", "top_half", "cumulative"] = field(
        default="consistent",
        metadata={
            "help": "Dominant neurons: 'consistent' (above the matrix mean in more than half of the probes, the "
            "paper's default), 'top_half' (the half with the most hits) or 'cumulative' (the fewest neurons holding "
            "pilora_threshold of the accumulated importance)."
        },
    )
    pilora_threshold: float = field(
        default=0.7,
        metadata={"help": "Importance share of the dominant neurons with pilora_partition 'cumulative', in (0, 1]."},
    )
    pilora_init: Literal["fresh", "carry"] = field(
        default="fresh",
        metadata={
            "help": "Stage-2 start: 'fresh' LoRAs on the pre-trained weight (Algorithm 1) or 'carry' stage 1's "
            "update into them (exact on dominant rows, best rank-r' approximation elsewhere)."
        },
    )
    pilora_target: str = field(
        default="q_proj,k_proj,v_proj,up_proj,down_proj",
        metadata={"help": "Comma-separated linear layers to adapt, or 'all'. Paper: Q, K, V, Up, Down."},
    )
    pilora_seed: int = field(default=42, metadata={"help": "Seed of the LoRA initializations."})


def build_pilora_config(args: PiloraArguments) -> PiloraConfig:
    """The :class:`PiloraConfig` described by the ``pilora_*`` fields.

    Raises:
        ValueError: naming the ``pilora_*`` argument when a value is invalid.
    """
    try:
        return PiloraConfig(
            rank=args.pilora_rank,
            supplementary_rank=args.pilora_supplementary_rank,
            alpha=args.pilora_alpha,
            dropout=args.pilora_dropout,
            interval=args.pilora_interval,
            probe_steps=args.pilora_probe_steps,
            probe_ratio=args.pilora_probe_ratio,
            partition=args.pilora_partition,
            threshold=args.pilora_threshold,
            init=args.pilora_init,
            target_modules=args.pilora_target,
            seed=args.pilora_seed,
        )
    except PiloraConfigError as err:
        raise ValueError(pilora_argument_error(err)) from None


def pilora_argument_error(err: PiloraConfigError) -> str:
    """Rephrase a PiLoRA configuration error with the LLaMA-Factory argument name."""
    name = {"supplementary_rank": "pilora_supplementary_rank", "target_modules": "pilora_target"}.get(
        err.field, f"pilora_{err.field}"
    )
    return f"Invalid {name}: {str(err).replace(err.field, name, 1)}"
