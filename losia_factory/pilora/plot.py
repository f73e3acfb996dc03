"""The partition a PiLoRA run found, per layer: a summary table and a figure in the spirit of the paper's Fig. 3.

Reads what ``PiloraAttachment.save_adapter`` writes next to the adapter: ``pilora_masks.safetensors`` (per layer
``<name>.hits``, ``<name>.total`` and, after stage 2, ``<name>.mask``) and ``pilora_config.json`` (probe counts).

Usage::

    rows = plot_partition("saves/pilora_run", "partition.png")   # or: losia-factory pilora-plot saves/pilora_run
    print(summary_markdown(rows))
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import torch

from .model import CONFIG_FILE, MASKS_FILE

BINS = 512  # every layer's neurons are resampled to this many columns, so layers of different widths line up
# Rows are grouped by module type in the order a decoder layer runs them; unknown types follow, alphabetically.
MODULE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_WRITER = (
    "PiloraAttachment.save_adapter writes it into the output folder of a `finetuning_type: pilora` run, next to "
    "adapter_model.safetensors"
)


def _read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``pilora_config.json`` of ``folder``, with a clear error when it is missing or not PiLoRA's."""
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {_WRITER}.")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {_WRITER}.") from None
    if not isinstance(config, dict) or not isinstance(config.get("probes"), dict):
        raise ValueError(f"{path} has no 'probes' mapping (layer -> number of probes); {_WRITER}.")
    return config


def load_partition(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read the hit counts, importance and masks a PiLoRA run saved.

    Args:
        folder: The adapter folder holding ``pilora_masks.safetensors`` and ``pilora_config.json``.

    Returns:
        ``{layer name: {"hits": int64 (out,), "total": float64 (out,), "mask": bool (out,) or None, "probes": int}}``,
        ordered by module type (q, k, v, o, gate, up, down, then others) and then by decoder-layer index. ``mask`` is
        None for a run saved during stage 1.

    Raises:
        FileNotFoundError: A file is missing (e.g. not a PiLoRA folder, or saved before the first probe).
        ValueError: A file is unreadable or its content is not what ``PiloraAttachment.save_adapter`` writes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    masks_path = os.path.join(folder, MASKS_FILE)
    if not os.path.isfile(masks_path):
        raise FileNotFoundError(
            f"{masks_path} not found: {_WRITER} (only once stage 1 has scored the neurons at least once)."
        )
    probes = _read_config(folder)["probes"]
    try:
        tensors = load_file(masks_path)
    except SafetensorError as err:
        raise ValueError(f"{masks_path} is not a readable safetensors file ({err}); {_WRITER}.") from None
    layers: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, _, kind = key.rpartition(".")
        if kind not in ("hits", "total", "mask") or not name:
            raise ValueError(f"{masks_path}: unexpected tensor {key!r}; {_WRITER}.")
        layers.setdefault(name, {"mask": None})[kind] = value
    for name, data in layers.items():
        missing = [kind for kind in ("hits", "total") if kind not in data]
        if missing:
            raise ValueError(f"{masks_path}: layer {name} has no {' or '.join(missing)} tensor; {_WRITER}.")
        shapes = {kind: tuple(data[kind].shape) for kind in ("hits", "total", "mask") if data[kind] is not None}
        if len(set(shapes.values())) != 1 or len(shapes["hits"]) != 1:
            raise ValueError(f"{masks_path}: layer {name} has mismatched shapes {shapes}; expected equal 1-D vectors.")
        if name not in probes:
            raise ValueError(
                f"{os.path.join(folder, CONFIG_FILE)} has no probe count for {name}: the two files come from "
                "different runs?"
            )
        data["probes"] = int(probes[name])
        data["hits"], data["total"] = data["hits"].to(torch.int64), data["total"].to(torch.float64)
        if data["mask"] is not None:
            data["mask"] = data["mask"].to(torch.bool)
    return dict(sorted(layers.items(), key=lambda item: _layer_order(item[0])))


def _module_and_index(name: str) -> tuple[str, int | None]:
    """``model.layers.12.self_attn.q_proj`` -> ``("q_proj", 12)``: module type and decoder-layer index."""
    index = re.search(r"\.(\d+)\.", f".{name}.")
    return name.rsplit(".", 1)[-1], int(index.group(1)) if index else None


def _layer_order(name: str) -> tuple[int, str, int, str]:
    """Sort key: module type (decoder order), then decoder-layer index, then the name itself."""
    module, index = _module_and_index(name)
    rank = MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER)
    return rank, module, -1 if index is None else index, name


def partition_summary(data: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per layer of what :func:`load_partition` returns (pure computation, no plotting).

    Each row has ``name``, ``out_features``, ``dominant`` (dominant neurons), ``dominant_fraction``, ``hit_rate``
    (hits / probes averaged over the neurons) and ``importance_share`` (share of the accumulated importance held by
    the dominant neurons). Values that need a mask (stage 2) or a probe are None without one.
    """
    rows = []
    for name, layer in data.items():
        hits, total, mask, probes = layer["hits"], layer["total"].double(), layer["mask"], layer["probes"]
        out_features = hits.numel()
        dominant = None if mask is None else int(mask.sum())
        held = None
        if mask is not None and float(total.sum()) > 0:  # an all-zero total (no gradient) has no share to split
            held = float(total[mask].sum() / total.sum())
        rows.append(
            {
                "name": name,
                "out_features": out_features,
                "dominant": dominant,
                "dominant_fraction": None if dominant is None else dominant / out_features,
                "hit_rate": float(hits.double().mean() / probes) if probes else None,
                "importance_share": held,
            }
        )
    return rows


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`partition_summary` as a markdown table (ends with a newline)."""

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| layer | out features | dominant | dominant fraction | mean hit rate | importance held by dominant |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['out_features']} | {fmt(r['dominant'], 'd')} | "
            f"{fmt(r['dominant_fraction'], '.1%')} | {fmt(r['hit_rate'], '.3f')} | "
            f"{fmt(r['importance_share'], '.1%')} |"
        )
    return "\n".join(lines) + "\n"


def _resample(values: torch.Tensor, bins: int) -> torch.Tensor:
    """``values`` on ``bins`` equal slices of its length: the mean of each slice, or the covering value if shorter."""
    values = values.double()
    if values.numel() >= bins:
        return torch.nn.functional.adaptive_avg_pool1d(values.reshape(1, 1, -1), bins).reshape(-1)
    # Fewer neurons than bins: repeat each neuron (nearest) so narrow layers show whole neurons, not blended edges.
    index = ((torch.arange(bins, dtype=torch.float64) + 0.5) * values.numel() / bins).long()
    return values[index]


def plot_partition(
    folder: str | os.PathLike, out_png: str | os.PathLike, max_layers: int | None = None
) -> list[dict[str, Any]]:
    """Draw the stage-1 hit rate per output neuron (one row per layer) and each layer's dominant fraction.

    Left: a heat map, one row per adapted layer (grouped by module type, ordered by layer index), output neurons along
    x resampled to ``BINS`` columns, colour = hits / probes. Right: the fraction of neurons in the dominant group and
    the share of accumulated importance they hold. Uses matplotlib's Agg canvas and leaves pyplot's state alone.

    Args:
        folder: The adapter folder of a PiLoRA run (see :func:`load_partition`).
        out_png: Where to write the PNG.
        max_layers: Plot (and summarise) only the first N layers in that order.

    Returns:
        The :func:`partition_summary` rows of the plotted layers.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            f'plot_partition needs matplotlib ({err}); install the bench extra: pip install "losia-factory[bench]"'
        ) from None
    if max_layers is not None and max_layers < 1:
        raise ValueError(f"max_layers must be >= 1, got {max_layers}")

    layers = load_partition(folder)
    config = _read_config(folder)
    if max_layers is not None:
        layers = dict(list(layers.items())[:max_layers])
    rows = partition_summary(layers)
    rates = torch.stack([_resample(d["hits"], BINS) / max(1, d["probes"]) for d in layers.values()]).numpy()
    names = list(layers)
    modules = [_module_and_index(name) for name in names]

    count = len(names)
    row_inches = 0.17 if count <= 64 else 0.06  # big models: thinner rows, labels thinned out below
    figure = Figure(figsize=(12, 2.2 + row_inches * count), layout="constrained")
    FigureCanvasAgg(figure)
    heat, bars = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [4, 1]})

    image = heat.imshow(rates, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    colorbar = figure.colorbar(image, ax=heat, fraction=0.03, pad=0.01)
    colorbar.set_label("hit rate = hits / probes", fontsize=8)
    heat.set_xticks([q * BINS / 4 - 0.5 for q in range(5)], ["0%", "25%", "50%", "75%", "100%"])
    heat.set_xlabel(
        f"output neurons, as a share of the layer's width (each row resampled to {BINS} bins: mean hit rate per bin)"
    )
    probes = sorted({d["probes"] for d in layers.values()})
    heat.set_title(
        f"stage 1: how often each neuron scored above its matrix's mean ({'/'.join(map(str, probes))} "
        f"probe{'' if probes == [1] else 's'})",
        fontsize=10,
    )

    # Label every row of a small model; on a big one, each group's first row and every `step`-th layer index.
    step = 1 if count <= 64 else 2 ** math.ceil(math.log2(count / 48))
    ticks, labels = [], []
    for row, (module, index) in enumerate(modules):
        first_of_group = row == 0 or modules[row - 1][0] != module
        if first_of_group and row:
            heat.axhline(row - 0.5, color="white", linewidth=1.5)  # group separator
            bars.axhline(row - 0.5, color="0.6", linewidth=0.8)
        if step == 1 or first_of_group or (index is not None and index % step == 0):
            ticks.append(row)
            labels.append(names[row] if index is None else f"{module} {index}")
    heat.set_yticks(ticks, labels, fontsize=7)
    heat.set_ylabel("adapted layer (module type, decoder-layer index)", fontsize=9)

    fractions = [r["dominant_fraction"] for r in rows]
    bars.barh(range(count), [f or 0.0 for f in fractions], height=0.8, color="tab:orange", label="dominant neurons")
    shares = [(r["importance_share"], row) for row, r in enumerate(rows) if r["importance_share"] is not None]
    if shares:
        bars.plot(
            *zip(*shares),
            linestyle="none",
            marker="|",
            markersize=max(3.0, row_inches * 72 * 0.8),
            markeredgewidth=1.5,
            color="black",
            label="their share of importance",
        )
    pilora = config.get("config", {})
    if pilora.get("partition") == "cumulative" and "threshold" in pilora:
        bars.axvline(pilora["threshold"], color="0.4", linestyle=":", linewidth=1, label="cumulative threshold")
    bars.set_xlim(0, 1)
    bars.set_xlabel("fraction of the layer")
    if all(f is None for f in fractions):
        bars.set_title("saved in stage 1: no partition yet", fontsize=9)
    else:
        bars.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7, frameon=False)
    bars.tick_params(axis="y", left=False)

    rule = pilora.get("partition", "?")
    if rule == "cumulative":
        rule += f" {pilora.get('threshold', '?')}"
    figure.suptitle(
        f"PiLoRA partition of {os.path.basename(os.path.abspath(folder))} "
        f"(rule: {rule}, stage {config.get('stage', '?')}, {count} layers)"
    )
    directory = os.path.dirname(os.fspath(out_png))
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    return rows
