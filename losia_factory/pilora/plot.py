"""The partition a PiLoRA run found, per layer: a summary table and a figure in the spirit of the paper's Fig. 3.

Reads what ``PiloraAttachment.save_adapter`` writes next to the adapter: ``pilora_masks.safetensors`` (per layer
``<name>.hits``, ``<name>.total`` and, after stage 2, ``<name>.mask``) and ``pilora_config.json`` (probe counts).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch

from .model import CONFIG_FILE, MASKS_FILE

BINS = 512  # every layer's neurons are resampled to this many columns, so layers of different widths line up


def load_partition(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{layer: {"hits", "total", "mask" (or None), "probes"}}`` from a PiLoRA output folder."""
    from safetensors.torch import load_file

    masks_path, config_path = os.path.join(folder, MASKS_FILE), os.path.join(folder, CONFIG_FILE)
    for path in (masks_path, config_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: point to the output folder of a `finetuning_type: pilora` run (the adapter folder "
                "with pilora_masks.safetensors and pilora_config.json)."
            )
    tensors = load_file(masks_path)
    with open(config_path, encoding="utf-8") as handle:
        probes = json.load(handle).get("probes", {})
    layers: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, _, kind = key.rpartition(".")
        if kind not in ("hits", "total", "mask"):
            raise ValueError(f"{masks_path}: unexpected tensor {key!r}; was it written by PiLoRA?")
        layers.setdefault(name, {"mask": None, "probes": int(probes.get(name, 0))})[kind] = value
    return dict(sorted(layers.items(), key=lambda item: _layer_order(item[0])))


def _layer_order(name: str) -> tuple[str, int, str]:
    """Sort key: module type, then decoder-layer index (``model.layers.12.self_attn.q_proj`` -> (q_proj, 12, ...))."""
    numbers = re.findall(r"\.(\d+)\.", name)
    return name.rsplit(".", 1)[-1], int(numbers[0]) if numbers else -1, name


def partition_summary(layers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per layer: neurons, dominant count and share, mean hit rate, importance share of the dominant ones."""
    rows = []
    for name, data in layers.items():
        hits, total, mask = data["hits"], data["total"].to(torch.float64), data["mask"]
        neurons = hits.numel()
        dominant = int(mask.sum()) if mask is not None else None
        share = float(total[mask].sum() / total.sum()) if mask is not None and total.sum() > 0 else None
        rows.append(
            {
                "layer": name,
                "neurons": neurons,
                "dominant": dominant,
                "dominant_fraction": None if dominant is None else dominant / neurons,
                "hit_rate": float(hits.double().mean() / data["probes"]) if data["probes"] else None,
                "importance_share": share,
            }
        )
    return rows


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a markdown table."""

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| layer | neurons | dominant | dominant share | mean hit rate | importance held by dominant |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['neurons']} | {fmt(r['dominant'], 'd')} | {fmt(r['dominant_fraction'], '.1%')} | "
            f"{fmt(r['hit_rate'], '.2f')} | {fmt(r['importance_share'], '.1%')} |"
        )
    return "\n".join(lines) + "\n"


def _resample(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Average ``values`` over ``bins`` equal slices of its length (repeat when shorter than ``bins``)."""
    values = values.double().reshape(1, 1, -1)
    return torch.nn.functional.adaptive_avg_pool1d(values, bins).reshape(-1)


def plot_partition(folder: str | os.PathLike, out_png: str | os.PathLike, max_layers: int | None = None) -> list[dict]:
    """Draw hit rates per output neuron (one row per layer) and each layer's dominant share; returns the summary."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError('The plot needs matplotlib: pip install "losia-factory[bench]".') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = load_partition(folder)
    if max_layers is not None:
        layers = dict(list(layers.items())[:max_layers])
    rows = partition_summary(layers)
    rates = torch.stack([_resample(d["hits"], BINS) / max(1, d["probes"]) for d in layers.values()]).numpy()
    height = max(3.0, 0.18 * len(layers) + 1.5)
    figure, (heat, bars) = plt.subplots(
        1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [4, 1]}, sharey=True, constrained_layout=True
    )
    image = heat.imshow(rates, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    heat.set_xlabel(f"output neurons (each row resampled to {BINS} bins, mean over a bin)")
    heat.set_yticks(range(len(layers)), [name.replace("model.layers.", "") for name in layers], fontsize=6)
    heat.set_title("hit rate in stage 1 (share of probes above the matrix mean)")
    figure.colorbar(image, ax=heat, fraction=0.03)
    fractions = [r["dominant_fraction"] or 0.0 for r in rows]
    bars.barh(range(len(rows)), fractions, color="tab:orange")
    bars.set_xlim(0, 1)
    bars.set_xlabel("dominant share (rank r)")
    figure.suptitle(f"PiLoRA partition: {os.path.basename(os.path.abspath(folder))}")
    figure.savefig(out_png, dpi=120)
    plt.close(figure)
    return rows
