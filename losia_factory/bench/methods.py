"""How each benchmarked method is set up on a fresh model: one function per method, in one table.

A set-up function takes the model and the spec and returns a :class:`MethodSetup`: the model to run (peft wraps
it), the optimizer (None when nothing steps outside backward), an optional LR scheduler, the names of parameters
whose values training must change, and the LoSiA optimizer when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .spec import BenchSpec, batches


@dataclass
class MethodSetup:
    """One method ready to train (see the module docstring)."""

    model: Any
    optimizer: Any = None
    scheduler: Any = None
    watch: list[str] = field(default_factory=list)
    losia: Any = None


BACKBONE_WATCH = ["model.layers.0.mlp.up_proj.weight", "lm_head.weight"]


def setup_floor(model, spec: BenchSpec) -> MethodSetup:
    """Frozen backbone; input gradients all the way down: the backward every method that trains inner layers runs."""
    model.requires_grad_(False)
    model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    return MethodSetup(model)


def _setup_losia(model, spec: BenchSpec, pro: bool) -> MethodSetup:
    """LoSiA at the spec's p, p_o and T, positioned in the slot of a decoder layer (the typical step).

    With the output layer first in the measuring order, step 0 would time the output layer's slot, the most
    expensive one and one slot in G; its extra cost enters the cycle average instead (see ``overheads``).
    """
    from ..core import LosiaConfig, LosiaLRScheduler, attach_losia

    config = LosiaConfig(
        rank_factor=spec.rank_factor, output_rank_factor=spec.output_rank_factor, time_slot=spec.time_slot, pro=pro
    )
    optimizer = attach_losia(model, config, lr=1e-4)
    scheduler = LosiaLRScheduler(optimizer, num_training_steps=10_000, kind="constant")
    decoder_groups = decoder_layer_groups(optimizer)
    optimizer.seek(decoder_groups[len(decoder_groups) // 2] * spec.time_slot)
    return MethodSetup(model, optimizer, scheduler, BACKBONE_WATCH, losia=optimizer)


def decoder_layer_groups(optimizer) -> list[int]:
    """The LoSiA groups of decoder layers (every group but a trained output layer's)."""
    return [g for g, targets in enumerate(optimizer.group_targets) if targets[0].num_in is not None]


def output_layer_group(optimizer) -> int | None:
    """The LoSiA group of the output layer, or None when it is frozen or trained densely."""
    groups = [g for g, targets in enumerate(optimizer.group_targets) if targets[0].num_in is None]
    return groups[0] if groups else None


def _setup_lora(model, spec: BenchSpec, rank: int, dora: bool) -> MethodSetup:
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", use_dora=dora)
    model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    watch = [n for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n][:4]
    return MethodSetup(model, optimizer, watch=watch)


def setup_pilora(model, spec: BenchSpec) -> MethodSetup:
    """PiLoRA in stage 2, where a run spends most of its steps, set up like ``lora`` for a fair comparison.

    Matched to ``lora``: rank r = ``spec.lora_rank`` (stage 1 and the dominant LoRA), alpha 2r, no dropout, every
    linear layer of the decoder layers (peft's "all-linear" minus the output layer, which it excludes), AdamW at
    lr 1e-4. The supplementary rank r' is 2 (the paper: 1 or 2 at r = 32), or 1 below r = 8, where 2 would be a
    quarter of r or more. The dominant group is the top half of each layer's output neurons by hits (the paper's
    ablation rule; a fixed size, so the cost does not depend on the random model's scores). Two stage-1 steps
    score the neurons (``observe`` after each backward pass), then ``enter_stage2`` installs the new adapters and
    the optimizer is rebuilt on them. On CUDA the peak-memory counter restarts after the switch, so that
    ``peak_mem_mb`` is stage 2's; a CPU process's peak resident size cannot be reset and includes stage 1.
    """
    import torch

    from ..pilora import PiloraConfig, attach_pilora

    rank = spec.lora_rank
    config = PiloraConfig(
        rank=rank,
        supplementary_rank=2 if rank >= 8 else 1,
        alpha=2 * rank,
        dropout=0.0,
        partition="top_half",
        target_modules="all",
    )
    pilora = attach_pilora(model, config)
    optimizer = torch.optim.AdamW(pilora.trainable_parameters(), lr=1e-4)
    for step, batch in enumerate(batches(spec, 2)):
        model(input_ids=batch, labels=batch).loss.backward()
        pilora.observe(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    pilora.enter_stage2()
    for param in pilora.trainable_parameters():
        optimizer.state.pop(param, None)  # the same tensors, new LoRAs: fresh moments, as in a real run
    watch = [n for n, p in model.named_parameters() if p.requires_grad and n.endswith("lora_A")][:4]
    if spec.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return MethodSetup(model, optimizer, watch=watch)


def setup_galore(model, spec: BenchSpec) -> MethodSetup:
    """Layer-wise GaLore (optimizer step inside backward), rank hidden/8, the output layer trained fully."""
    import torch
    from galore_torch import GaLoreAdamW

    model.requires_grad_(False)
    optimizers = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            param = module.weight
            param.requires_grad_(True)
            group = {"params": [param], "rank": spec.hidden_size // 8, "update_proj_gap": 200, "scale": 2.0}
            optimizers[param] = GaLoreAdamW([{**group, "proj_type": "std"}], lr=1e-4)
    head = model.get_output_embeddings().weight
    head.requires_grad_(True)
    optimizers[head] = torch.optim.AdamW([head], lr=1e-4)

    def step_in_backward(param):
        optimizers[param].step()
        optimizers[param].zero_grad()

    for param in optimizers:
        param.register_post_accumulate_grad_hook(step_in_backward)
    return MethodSetup(model, watch=BACKBONE_WATCH)


def setup_full(model, spec: BenchSpec) -> MethodSetup:
    """Full fine-tuning: every parameter with AdamW."""
    import torch

    return MethodSetup(model, torch.optim.AdamW(model.parameters(), lr=1e-4), watch=BACKBONE_WATCH)


SETUPS: dict[str, Callable[[Any, BenchSpec], MethodSetup]] = {
    "floor": setup_floor,
    "losia_pro": lambda model, spec: _setup_losia(model, spec, pro=True),
    "losia": lambda model, spec: _setup_losia(model, spec, pro=False),
    "lora": lambda model, spec: _setup_lora(model, spec, spec.lora_rank, dora=False),
    "dora": lambda model, spec: _setup_lora(model, spec, spec.lora_rank, dora=True),
    "pilora": setup_pilora,
    "lora_r64": lambda model, spec: _setup_lora(model, spec, 64, dora=False),
    "dora_r64": lambda model, spec: _setup_lora(model, spec, 64, dora=True),
    "galore": setup_galore,
    "full": setup_full,
}
METHODS = tuple(SETUPS)
