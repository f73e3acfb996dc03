"""Figure data that needs weights (read tensor by tensor, no model built): changed entries and singular vectors.

* coverage, second half (:func:`changed_share`): the share of each weight's entries whose bits differ from the base;
* Fig. 8 (:func:`singular_similarity`): how far the top singular vectors of each trained weight moved from the base
  weight's, the "intruder dimension" argument: low-rank updates add new dominant directions, sparse ones do not.

A second run to compare (LoRA, say) is read by :class:`ComparedWeights`: a full model folder, or a PEFT LoRA adapter
folder merged onto the base here (``W + scaling * B @ A``, as PEFT merges it).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model_files import WeightReader, changed_mask
from .run import RunLog, module_sort_key
from .subnets import trained_mask

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Shuttleworth et al.'s intruder test: a trained singular vector whose best match among the base's is below this.
INTRUDER_BELOW = 0.5


def changed_share(run: RunLog, base: WeightReader, trained: WeightReader) -> dict[str, Any]:
    """Per target weight: the share of entries that changed, and how many changed outside every recorded block.

    Returns:
        ``{"targets": {name: {"changed": share, "outside_blocks": count}}, "other_changed": {tensor: share}}``; the
        second lists the non-target tensors that changed (the extra fully-trained parameters, if any).
    """
    targets: dict[str, Any] = {}
    for name, target in run.targets.items():
        mask = changed_mask(base.get(f"{name}.weight"), trained.get(f"{name}.weight")).reshape(target.shape)
        outside = mask.numpy() & ~trained_mask(target)
        targets[name] = {"changed": float(mask.float().mean()), "outside_blocks": int(outside.sum())}
    weight_names = {f"{name}.weight" for name in run.targets}
    other = {}
    for name in trained.names():
        if name in weight_names or name not in base.files:
            continue
        a, b = base.get(name), trained.get(name)
        if a.shape == b.shape and a.dtype == b.dtype:
            share = float(changed_mask(a, b).float().mean())
            if share > 0:
                other[name] = share
    return {"targets": targets, "other_changed": other}


# Below this many rows or columns an SVD runs on one thread: several threads only add synchronization there, which
# costs 100x on a busy machine (1.9 s instead of 0.02 s for 512 x 128 on 2 shared cores).
ONE_THREAD_BELOW = 1024


def left_singular_vectors(weight: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U[:, :top], all of U)``: left singular vectors (output space) in float64, largest singular value first."""
    threads = torch.get_num_threads()
    if min(weight.shape) < ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    try:
        u, _, _ = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    finally:
        torch.set_num_threads(threads)
    return u[:, :top], u


def singular_similarity(base: torch.Tensor, trained: torch.Tensor, top: int) -> dict[str, Any]:
    """Similarity of the top singular vectors of ``trained`` to those of ``base``.

    Returns:
        ``{"aligned": [|cos(u_i, u'_i)| for i < k], "best": [max_j |cos(u'_i, u_j)| over all base vectors j],
        "mean_aligned", "mean_best", "intruders" (count of best < 0.5), "k"}`` with ``k = min(top, rank)``. Identical
        weights give 1 everywhere; the sign of a singular vector is arbitrary, hence the absolute value.
    """
    k = min(top, *base.shape)
    u_base_top, u_base = left_singular_vectors(base, k)
    u_trained, _ = left_singular_vectors(trained, k)
    aligned = (u_base_top * u_trained).sum(dim=0).abs()
    best = (u_base.T @ u_trained).abs().max(dim=0).values
    return {
        "k": k,
        "aligned": [round(v, 6) for v in aligned.tolist()],
        "best": [round(v, 6) for v in best.tolist()],
        "mean_aligned": float(aligned.mean()),
        "mean_best": float(best.mean()),
        "intruders": int((best < INTRUDER_BELOW).sum()),
    }


class ComparedWeights:
    """The weights of a second run over the same base: a full model folder or a PEFT LoRA adapter folder.

    Args:
        folder: The second run's output folder (``--compare``).
        base: Reader of the base model (needed for an adapter).
    """

    def __init__(self, folder: str | os.PathLike[str], base: WeightReader | None) -> None:
        self.folder = Path(folder)
        self.base = base
        config_path = self.folder / ADAPTER_CONFIG
        self.adapter: dict[str, torch.Tensor] | None = None
        self.full: WeightReader | None = None
        if config_path.is_file():
            from safetensors.torch import load_file

            self.config = json.loads(config_path.read_text(encoding="utf-8"))
            if self.config.get("peft_type", "LORA") != "LORA" or self.config.get("use_dora"):
                raise ValueError(
                    f"--compare {folder}: only plain LoRA adapters (and full models) are compared; this adapter is "
                    f"{self.config.get('peft_type')}{' with DoRA' if self.config.get('use_dora') else ''}."
                )
            if base is None:
                raise ValueError(f"--compare {folder} is a LoRA adapter: comparing it needs the base model (--base).")
            weights = self.folder / ADAPTER_WEIGHTS
            if not weights.is_file():
                raise FileNotFoundError(f"--compare {folder} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}.")
            self.adapter = load_file(str(weights))
            self.kind = f"LoRA r={self.config.get('r')}"
        else:
            self.full = WeightReader(self.folder, "--compare")
            self.kind = "full model"

    def _scaling(self, name: str, rank: int) -> float:
        alpha = float(self.config.get("lora_alpha", rank))
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if name.endswith(pattern) or pattern in name:
                alpha = float(value)
        return alpha / math.sqrt(rank) if self.config.get("use_rslora") else alpha / rank

    def get(self, module: str) -> torch.Tensor:
        """The compared run's weight of ``module`` (e.g. ``model.layers.0.self_attn.q_proj``)."""
        if self.full is not None:
            return self.full.get(f"{module}.weight")
        assert self.adapter is not None and self.base is not None
        base = self.base.get(f"{module}.weight")
        prefix = f"base_model.model.{module}"
        a, b = self.adapter.get(f"{prefix}.lora_A.weight"), self.adapter.get(f"{prefix}.lora_B.weight")
        if a is None or b is None:
            return base  # not adapted: unchanged
        delta = (b.double() @ a.double()) * self._scaling(module, a.shape[0])
        if self.config.get("fan_in_fan_out"):
            delta = delta.T
        return (base.double() + delta).to(base.dtype)


def similarity_table(
    run: RunLog,
    base: WeightReader,
    trained: WeightReader,
    top: int,
    compare: ComparedWeights | None = None,
    layers: set[int] | None = None,
) -> dict[str, Any]:
    """Fig. 8 data for every target (restricted to decoder ``layers`` when given), LoSiA and the compared run.

    Returns:
        ``{"top": top, "compare_kind": ..., "targets": {name: {"losia": {...}, "compare": {...} or None}},
        "summary": {module: {"losia_mean_aligned", "compare_mean_aligned", "losia_intruders", ...}}}``.
    """
    rows: dict[str, Any] = {}
    for name, target in run.targets.items():
        if layers is not None and target.layer is not None and target.layer not in layers:
            continue
        base_w = base.get(f"{name}.weight")
        rows[name] = {
            "losia": singular_similarity(base_w, trained.get(f"{name}.weight"), top),
            "compare": None if compare is None else singular_similarity(base_w, compare.get(name), top),
        }
    summary: dict[str, Any] = {}
    for name, row in sorted(rows.items(), key=lambda item: module_sort_key(run.targets[item[0]].module)):
        module = run.targets[name].module
        entry = summary.setdefault(module, {"layers": 0})
        entry["layers"] += 1
        for run_name in ("losia", "compare"):
            values = row[run_name]
            if values is None:
                continue
            for key in ("mean_aligned", "mean_best"):
                entry.setdefault(f"{run_name}_{key}", []).append(values[key])
            entry[f"{run_name}_intruders"] = entry.get(f"{run_name}_intruders", 0) + values["intruders"]
    for entry in summary.values():
        for key, value in list(entry.items()):
            if isinstance(value, list):
                entry[key] = float(np.mean(value))
    return {
        "top": top,
        "compare_kind": None if compare is None else compare.kind,
        "targets": rows,
        "summary": summary,
    }
