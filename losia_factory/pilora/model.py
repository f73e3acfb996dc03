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
            for p in pilora.trainable_parameters():
                optimizer.state.pop(p, None)   # same parameters, new LoRAs: fresh Adam moments
    pilora.save_adapter("out")         # adapter_model.safetensors + adapter_config.json, rank r + r'

The trainable parameters are the same tensors in both stages (see :mod:`.layer`), so a DDP wrapper built at the
start stays valid. :meth:`PiloraAttachment.save_training_state` / :meth:`PiloraAttachment.load_training_state` carry
the stage, the masks, the hit counts and the adapter values through a checkpoint (the optimizer saves its own state).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.attach import find_attached
from ..core.discovery import find_decoder_layers, matches_target
from ..core.nonfinite import NonFiniteGuard, all_finite
from ..fileio import write_file_atomic, write_json_atomic
from .config import PiloraConfig, PiloraConfigError
from .importance import HitCounter, neuron_scores
from .layer import PiloraLinear
from .partition import dominant_mask

ATTACHMENT = "pilora_attachment"
MASKS_FILE = "pilora_masks.safetensors"
CONFIG_FILE = "pilora_config.json"
STATE_FILE = "pilora_state.safetensors"
RESUMABLE_CHANGES = ("max_consecutive_nonfinite_steps",)


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
    # Steps skipped for NaN/Inf adapter gradients (the training loop or PiloraCallback counts them).
    nonfinite: NonFiniteGuard = field(default_factory=lambda: NonFiniteGuard(10))

    # -- stage 1 ----------------------------------------------------------------------------------------------------

    def observe(self, step: int) -> bool:
        """After the backward pass of 0-based step ``step``: on every K-th stage-1 step, count hits (Algorithm 1).

        Returns whether this step was scored. Gradients summed over micro-batches are what the optimizer sees, so
        they are what is scored. Scores holding NaN or Inf are not counted (one fused check for all layers): the
        whole probe is dropped, so the hit counts and the masks built from them stay finite and consistent.
        """
        if self.stage != 1 or step % self.config.interval:
            return False
        scores = {}
        for name, layer in self.layers.items():
            approx = layer.approximate_gradient()
            if approx is not None:  # None: the layer took no part in this step
                scores[name] = neuron_scores(approx)
        if not scores or not all_finite(scores.values()):
            return False
        for name, score in scores.items():
            counter = self.counters.setdefault(name, HitCounter(score.numel(), device=score.device))
            counter.update(score)
        return True

    def gradients_finite(self) -> bool:
        """Whether every adapter gradient is finite (one fused check; missing gradients count as finite)."""
        return all_finite(p.grad for p in self.trainable_parameters())

    def drop_gradients(self) -> None:
        """Forget the adapter gradients: ``torch.optim`` optimizers then skip these parameters in their next step.

        No update, no change of moments or step count.
        """
        for param in self.trainable_parameters():
            param.grad = None

    def switch_due(self, step: int, num_training_steps: int) -> bool:
        """True right after the optimizer step that ends stage 1."""
        return self.stage == 1 and step + 1 == self.config.probe_length(num_training_steps)

    def enter_stage2(self) -> dict[str, torch.Tensor]:
        """Partition every layer's neurons and install the dominant and supplementary LoRAs; returns the masks.

        The trainable parameters stay the same tensors with new values: drop their optimizer state afterwards.
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
        """Every layer's ``lora_A`` and ``lora_B``: the same tensors in both stages."""
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
        tensors = self.adapter_state_dict()
        write_file_atomic(os.path.join(folder, "adapter_model.safetensors"), lambda tmp: save_file(tensors, tmp))
        write_json_atomic(os.path.join(folder, "adapter_config.json"), self.adapter_config(base_model_name_or_path))
        analysis = {}
        for name, counter in self.counters.items():
            analysis[f"{name}.hits"] = counter.hits.cpu()
            analysis[f"{name}.total"] = counter.total.cpu()
            if self.stage == 2:
                analysis[f"{name}.mask"] = self.layers[name].dominant_mask.cpu()
        if analysis:
            write_file_atomic(os.path.join(folder, MASKS_FILE), lambda tmp: save_file(analysis, tmp))
        write_json_atomic(
            os.path.join(folder, CONFIG_FILE),
            {
                "config": self.config.to_dict(),
                "stage": self.stage,
                "probes": {name: c.probes for name, c in self.counters.items()},
                "trainable": self.num_trainable(),
            },
        )

    def save_training_state(self, folder: str | os.PathLike) -> None:
        """Write ``pilora_state.safetensors``: what a resumed run needs beyond the optimizer state (atomically).

        The exact fp32 ``lora_A`` / ``lora_B`` of every layer (the exported adapter has the scaling folded in, which
        does not round-trip bit for bit), the dominant indices in stage 2, the hit counts, the generator that draws
        the stage-2 initialization, and as metadata the stage, the probe counts and the config.
        """
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {"generator": self.generator.get_state()}
        for name, layer in self.layers.items():
            tensors[f"{name}.lora_A"] = layer.lora_A.detach().cpu().contiguous()
            tensors[f"{name}.lora_B"] = layer.lora_B.detach().cpu().contiguous()
            if self.stage == 2:
                tensors[f"{name}.dominant_idx"] = layer.dominant_idx.cpu()
        for name, counter in self.counters.items():
            tensors[f"{name}.hits"], tensors[f"{name}.total"] = counter.hits.cpu(), counter.total.cpu()
        metadata = {
            "stage": str(self.stage),
            "nonfinite": json.dumps(self.nonfinite.state_dict()),
            "probes": json.dumps({name: c.probes for name, c in self.counters.items()}),
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
        }
        write_file_atomic(os.path.join(folder, STATE_FILE), lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @torch.no_grad()
    def load_training_state(self, folder: str | os.PathLike) -> None:
        """Restore what :meth:`save_training_state` wrote into this freshly attached (stage-1) model.

        Raises:
            FileNotFoundError: the folder has no ``pilora_state.safetensors``.
            ValueError: it was saved with another PiLoRA configuration or other target layers.
        """
        from safetensors import safe_open

        path = os.path.join(folder, STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: this checkpoint has no PiLoRA training state (it was written by a version "
                "that could not resume PiLoRA, or its write was interrupted). Resume from another checkpoint or "
                "start a new run (overwrite_output_dir: true)."
            )
        if self.stage != 1 or self.counters:
            raise RuntimeError("load_training_state() needs a freshly attached model")
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
        saved = json.loads(metadata.get("config", "{}"))
        current = json.loads(json.dumps(self.config.to_dict(), sort_keys=True))
        # The NaN tolerance may change on resume (e.g. raised to get past a burst); everything else shapes the state.
        differ = sorted(
            k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES
        )
        if differ:
            raise ValueError(
                f"{path} was saved with other PiLoRA settings ({', '.join(f'{k}: {saved.get(k)!r}' for k in differ)}"
                "); resume with the settings of the saved run."
            )
        missing = [name for name in self.layers if f"{name}.lora_A" not in tensors]
        if missing:
            raise ValueError(f"{path} has no adapter for {missing[0]} ({len(missing)} layers): another model?")
        probes = json.loads(metadata.get("probes", "{}"))
        for name, count in probes.items():
            counter = HitCounter(self.layers[name].out_features, device=self.layers[name].lora_A.device)
            counter.load_state_dict(
                {"hits": tensors[f"{name}.hits"], "total": tensors[f"{name}.total"], "probes": count}
            )
            self.counters[name] = counter
        for name, layer in self.layers.items():
            layer.lora_A.copy_(tensors[f"{name}.lora_A"])
            layer.lora_B.copy_(tensors[f"{name}.lora_B"])
            if metadata.get("stage") == "2":
                layer.set_partition(tensors[f"{name}.dominant_idx"])
        if metadata.get("stage") == "2":
            self.stage = 2
        self.generator.set_state(tensors["generator"])
        self.nonfinite.load_state_dict(json.loads(metadata.get("nonfinite", "{}")))

    @torch.no_grad()
    def merge(self) -> None:
        """Add every layer's update into its base weight (Eq. 11) and zero the adapters' effect."""
        for layer in self.layers.values():
            weight = layer.base_layer.weight
            weight += layer.delta_weight().to(weight.dtype)
            layer.lora_B.zero_()


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
    attachment = PiloraAttachment(
        config=config,
        layers=layers,
        generator=generator,
        nonfinite=NonFiniteGuard(config.max_consecutive_nonfinite_steps),
    )
    setattr(model, ATTACHMENT, attachment)  # a plain attribute: nn.Module registers only modules and tensors
    return attachment
