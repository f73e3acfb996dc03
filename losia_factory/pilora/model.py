"""Attaching PiLoRA to a model, running its two stages, and saving the result as a standard PEFT LoRA adapter.

Use in a training loop (0-based optimizer step ``t``; P = ``config.probe_length(total_steps)``)::

    pilora = attach_pilora(model, config)
    optimizer = AdamW(pilora.trainable_parameters(), lr=...)
    for t, batch in enumerate(loader):
        model(**batch).loss.backward()
        pilora.observe(t)              # stage 1: every K-th step scores the neurons (Eqs. 7-8, hit counts)
        optimizer.step(); optimizer.zero_grad()
        if pilora.switch_due(t, total_steps):
            pilora.enter_stage2()      # masks from the hit counts, dominant + supplementary LoRAs
            optimizer = AdamW(pilora.trainable_parameters(), lr=...)
    pilora.save_adapter("out")         # adapter_model.safetensors + adapter_config.json, rank r + r'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.attach import find_attached
from ..core.discovery import find_decoder_layers, matches_target
from ..fileio import write_json_atomic
from .config import PiloraConfig, PiloraConfigError
from .importance import HitCounter, neuron_scores
from .layer import PiloraLinear
from .partition import dominant_mask

ATTACHMENT = "pilora_attachment"
MASKS_FILE = "pilora_masks.safetensors"
CONFIG_FILE = "pilora_config.json"


def find_pilora_targets(model: nn.Module, config: PiloraConfig) -> list[str]:
    """Qualified names of the decoder layers' ``nn.Linear`` modules that ``config.target_modules`` selects.

    Matching follows LoSiA's rules (:func:`~losia_factory.core.discovery.matches_target`); in addition every entry
    must select some linear layer, so a misspelt name is reported instead of silently adapting fewer layers.
    """
    try:
        layers_path, layers = find_decoder_layers(model)
    except ValueError:
        # LoSiA's message would point at its layers_path option, which PiLoRA does not have.
        raise PiloraConfigError(
            "target_modules",
            "target_modules cannot be matched: PiLoRA adapts linear layers inside the decoder layers, and the model "
            "has no nn.ModuleList of blocks containing nn.Linear layers. Use finetuning_type: lora for this model.",
        ) from None
    patterns = ("all",) if config.target_modules == "all" else tuple(config.target_modules)
    names: list[str] = []
    available: set[str] = set()
    used: set[str] = set()
    for index, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            available.add(name.rsplit(".", 1)[-1])
            hits = {p for p in patterns if matches_target(name, (p,))}
            if hits:
                used |= hits
                names.append(f"{layers_path}.{index}.{name}")
    missing = sorted(set(patterns) - used)
    if missing:
        raise PiloraConfigError(
            "target_modules",
            f"target_modules {missing} match no linear layer of the decoder layers; available: "
            f"{', '.join(sorted(available))} (or 'all').",
        )
    return names


def find_pilora_attachment(model: nn.Module | None) -> PiloraAttachment | None:
    """The :class:`PiloraAttachment` of ``model`` or of a module inside it (e.g. inside a DDP wrapper)."""
    return find_attached(model, ATTACHMENT)


@dataclass
class PiloraAttachment:
    """The PiLoRA layers of a model (kept on it as ``model.pilora_attachment``) and their stage-1 hit counts."""

    config: PiloraConfig
    layers: dict[str, PiloraLinear]
    counters: dict[str, HitCounter] = field(default_factory=dict)
    generator: torch.Generator = field(default_factory=torch.Generator)
    stage: int = 1

    # -- stage 1 ----------------------------------------------------------------------------------------------------

    def observe(self, step: int) -> bool:
        """After the backward pass of 0-based step ``step``: on every K-th stage-1 step, count hits (Algorithm 1).

        Returns whether this step was scored. Gradients summed over micro-batches are what the optimizer sees, so
        they are what is scored.
        """
        if self.stage != 1 or step % self.config.interval:
            return False
        scored = False
        for name, layer in self.layers.items():
            approx = layer.approximate_gradient()
            if approx is None:
                continue  # the layer took no part in this step
            counter = self.counters.setdefault(name, HitCounter(layer.out_features, device=approx.device))
            counter.update(neuron_scores(approx))
            scored = True
        return scored

    def switch_due(self, step: int, num_training_steps: int) -> bool:
        """True right after the optimizer step that ends stage 1."""
        return self.stage == 1 and step + 1 == self.config.probe_length(num_training_steps)

    def enter_stage2(self) -> dict[str, torch.Tensor]:
        """Partition every layer's neurons and install the dominant and supplementary LoRAs; returns the masks.

        The optimizer must be rebuilt afterwards: the trainable parameters are new tensors.
        """
        if self.stage != 1:
            raise RuntimeError("PiLoRA is already in stage 2")
        unscored = [name for name in self.layers if name not in self.counters]
        if unscored:
            raise RuntimeError(
                f"{len(unscored)} layers were never scored in stage 1 (first: {unscored[0]}): call observe(step) "
                "after each backward pass, and make stage 1 at least `interval` steps long."
            )
        masks = {}
        for name, layer in self.layers.items():
            masks[name] = dominant_mask(self.counters[name], self.config.partition, self.config.threshold)
            layer.enter_stage2(masks[name], self.config.init, self.generator)
        self.stage = 2
        return masks

    # -- reporting and saving ---------------------------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in layer.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(layer.num_trainable() for layer in self.layers.values())

    def partition_sizes(self) -> dict[str, tuple[int, int]]:
        """``{layer: (dominant neurons, output neurons)}`` (stage 2)."""
        return {name: (int(layer.dominant_idx.numel()), layer.out_features) for name, layer in self.layers.items()}

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """PEFT LoRA tensors (``base_model.model.<layer>.lora_A.weight`` / ``.lora_B.weight``), scaling folded in."""
        tensors = {}
        for name, layer in self.layers.items():
            lora_a, lora_b = layer.lora_factors()
            tensors[f"base_model.model.{name}.lora_A.weight"] = lora_a.contiguous().cpu()
            tensors[f"base_model.model.{name}.lora_B.weight"] = lora_b.contiguous().cpu()
        return tensors

    def adapter_config(self, base_model_name_or_path: str | None = None) -> dict[str, Any]:
        """A PEFT ``LoraConfig`` (as JSON) with rank r + r' and alpha = rank, i.e. scaling 1 (folded into B)."""
        rank = self.config.rank + (self.config.supplementary_rank if self.stage == 2 else 0)
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path,
            "r": rank,
            "lora_alpha": rank,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "inference_mode": True,
            "init_lora_weights": True,
            "target_modules": sorted({name.rsplit(".", 1)[-1] for name in self.layers}),
        }

    def save_adapter(self, folder: str | os.PathLike, base_model_name_or_path: str | None = None) -> None:
        """Write a standard LoRA adapter (any LoRA consumer loads it) plus the masks and hit counts."""
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        save_file(self.adapter_state_dict(), os.path.join(folder, "adapter_model.safetensors"))
        write_json_atomic(os.path.join(folder, "adapter_config.json"), self.adapter_config(base_model_name_or_path))
        analysis = {}
        for name, counter in self.counters.items():
            analysis[f"{name}.hits"] = counter.hits.cpu()
            analysis[f"{name}.total"] = counter.total.cpu()
            if self.stage == 2:
                analysis[f"{name}.mask"] = self.layers[name].dominant_mask.cpu()
        if analysis:
            save_file(analysis, os.path.join(folder, MASKS_FILE))
        write_json_atomic(
            os.path.join(folder, CONFIG_FILE),
            {
                "config": self.config.to_dict(),
                "stage": self.stage,
                "probes": {name: c.probes for name, c in self.counters.items()},
                "trainable": self.num_trainable(),
            },
        )

    @torch.no_grad()
    def merge(self) -> None:
        """Add every layer's update into its base weight (Eq. 11) and zero the adapters' effect."""
        for layer in self.layers.values():
            weight = layer.base_layer.weight
            weight += layer.delta_weight().to(weight.dtype)
            if layer.stage == 1:
                layer.lora_B.zero_()
            else:
                layer.dominant_B.zero_()
                layer.supplementary_B.zero_()


def attach_pilora(model: nn.Module, config: PiloraConfig) -> PiloraAttachment:
    """Freeze ``model`` and wrap its target linear layers with stage-1 PiLoRA (standard LoRA of rank r)."""
    if hasattr(model, ATTACHMENT):
        raise RuntimeError("PiLoRA is already attached to this model.")
    names = find_pilora_targets(model, config)
    for param in model.parameters():
        param.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    layers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = PiloraLinear(
            getattr(parent, child), config.rank, config.supplementary_rank, config.scaling, config.dropout, generator
        )
        setattr(parent, child, layer)
        layers[name] = layer
    attachment = PiloraAttachment(config=config, layers=layers, generator=generator)
    setattr(model, ATTACHMENT, attachment)  # a plain attribute: nn.Module registers only modules and tensors
    return attachment
