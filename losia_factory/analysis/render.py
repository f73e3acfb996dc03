"""Drawing the analysis figures from their data (the dicts of the data modules); matplotlib's Agg canvas only.

Each function takes the data and a PNG path and draws nothing else: what a figure shows is decided and tested in
the data modules.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .run import module_sort_key, module_type_and_layer

DPI = 110


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            f"the analysis figures need matplotlib ({err}); install the bench extra: "
            'pip install "losia-factory[bench]"'
        ) from None
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | os.PathLike[str]) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)


def draw_positions(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Fig. 3: one row per subnet (top: first), a dark cell for every neuron in the block; outputs and inputs."""
    sides = [("out_idx", "output neurons", data["shape"][0])]
    if data["in_idx"] is not None:
        sides.append(("in_idx", "input neurons", data["shape"][1]))
    figure = _figure(5.5 * len(sides), 0.25 * len(data["steps"]) + 1.8)
    for column, (key, label, size) in enumerate(sides, 1):
        grid = np.zeros((len(data[key]), size))
        for row, idx in enumerate(data[key]):
            grid[row, idx] = 1.0
        axes = figure.add_subplot(1, len(sides), column)
        axes.imshow(grid, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
        axes.set_xlabel(label)
        axes.set_ylabel("subnet chosen after step")
        rows = len(data["steps"])
        ticks = np.unique(np.linspace(0, rows - 1, min(rows, 12)).round().astype(int))
        axes.set_yticks(ticks, [str(data["steps"][t]) for t in ticks], fontsize=8)
        axes.set_title(f"{data['name']}: {label}", fontsize=9)
    _save(figure, path)


def draw_frequencies(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Fig. 7: per module type, every layer's sorted neuron frequencies (grey) and their mean (black)."""
    panels = [(m, side) for m in data for side in ("out", "in") if side in data[m]]
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure = _figure(3.2 * columns, 2.6 * rows)
    for number, (module, side) in enumerate(panels, 1):
        entry = data[module][side]
        axes = figure.add_subplot(rows, columns, number)
        curves = [np.asarray(c) for c in entry["sorted"]]
        for curve in curves:
            axes.plot(np.linspace(0, 1, len(curve)), curve, color="0.75", linewidth=0.8)
        if len({len(c) for c in curves}) == 1:
            mean = np.mean(curves, axis=0)
            axes.plot(np.linspace(0, 1, len(mean)), mean, color="black", linewidth=1.5)
        axes.axhline(entry["summary"]["kept"], color="tab:red", linestyle=":", linewidth=1)
        summary = entry["summary"]
        axes.set_title(
            f"{module} ({side}) gini {summary['gini']:.2f}, top10% {summary['top10_share']:.0%}", fontsize=8
        )
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("neurons, most selected first", fontsize=8)
        axes.set_ylabel("share of steps in block", fontsize=8)
    _save(figure, path)


def _grid(values: dict[str, float]) -> tuple[np.ndarray, list[str], list[str]]:
    """Rows = decoder layers (then layer-less modules), columns = module types."""
    modules = sorted({module_type_and_layer(n)[0] for n in values}, key=module_sort_key)
    layers = sorted({module_type_and_layer(n)[1] for n in values} - {None})  # type: ignore[type-var]
    row_labels = [str(layer) for layer in layers]
    has_other = any(module_type_and_layer(n)[1] is None for n in values)
    if has_other:
        row_labels.append("other")
    grid = np.full((len(row_labels), len(modules)), np.nan)
    for name, value in values.items():
        module, layer = module_type_and_layer(name)
        row = row_labels.index("other" if layer is None else str(layer))
        grid[row, modules.index(module)] = value
    return grid, row_labels, modules


def draw_coverage(trained: dict[str, float], changed: dict[str, float] | None, path: str | os.PathLike[str]) -> None:
    """Coverage heat maps: share of entries ever in a block, and (with weights) share of entries changed."""
    panels = [("entries ever in a block", trained)]
    if changed is not None:
        panels.append(("entries changed vs base", changed))
    grid, rows, columns = _grid(trained)
    # One colour scale for both panels, up to the largest share: LoSiA's shares are small, a 0-1 scale hides them.
    top = max(max(values.values(), default=0.0) for _, values in panels) or 1.0
    figure = _figure(4.2 * len(panels) + 0.8, 0.3 * len(rows) + 2.2)
    for number, (title, values) in enumerate(panels, 1):
        grid, rows, columns = _grid(values)
        axes = figure.add_subplot(1, len(panels), number)
        image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=top)
        axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
        axes.set_yticks(range(len(rows)), rows, fontsize=8)
        axes.set_ylabel("decoder layer")
        axes.set_title(title, fontsize=9)
        for (r, c), value in np.ndenumerate(grid):
            if not np.isnan(value) and grid.size <= 200:
                axes.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white")
        figure.colorbar(image, ax=axes, fraction=0.046)
    _save(figure, path)


def draw_similarity(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Fig. 8: per module type, |cos| of the i-th singular vectors before/after, mean over layers.

    LoSiA solid, the compared run dashed.
    """
    by_module: dict[str, list[dict[str, Any]]] = {}
    for name, row in data["targets"].items():
        by_module.setdefault(module_type_and_layer(name)[0], []).append(row)
    modules = sorted(by_module, key=module_sort_key)
    columns = min(4, len(modules))
    rows = -(-len(modules) // columns)
    figure = _figure(3.2 * columns, 2.6 * rows)
    for number, module in enumerate(modules, 1):
        axes = figure.add_subplot(rows, columns, number)
        for key, style, label in (("losia", "-", "LoSiA"), ("compare", "--", data.get("compare_kind") or "compare")):
            curves = [row[key]["aligned"] for row in by_module[module] if row[key] is not None]
            if not curves or len({len(c) for c in curves}) != 1:
                continue
            mean = np.mean(curves, axis=0)
            axes.plot(np.arange(1, len(mean) + 1), mean, style, label=label, linewidth=1.2)
        axes.set_ylim(0, 1.05)
        axes.set_title(module, fontsize=9)
        axes.set_xlabel("singular vector (largest first)", fontsize=8)
        axes.set_ylabel("|cos| base vs trained", fontsize=8)
        axes.legend(fontsize=7)
    _save(figure, path)


def draw_lr_timeline(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Per-group learning rates over the logged steps; base rate black, reselections as marks at the bottom."""
    from matplotlib import colormaps

    figure = _figure(8.0, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    colors = colormaps["viridis"](np.linspace(0, 0.9, max(1, len(data["groups"]))))
    color_of = {}
    for color, (name, rates) in zip(colors, data["groups"].items()):
        color_of[name] = color
        points = [(s, r) for s, r in zip(data["steps"], rates) if r is not None]
        if points:
            axes.plot(*zip(*points), color=color, linewidth=0.9, label=name)
    if data["base"] is not None:
        axes.plot(data["steps"], data["base"], color="black", linewidth=1.6, linestyle="--", label="base schedule")
    for step, group in data["reselections"]:
        axes.axvline(step, color=color_of.get(group, "grey"), alpha=0.25, linewidth=0.8)
        axes.plot([step], [0], marker="v", color=color_of.get(group, "grey"), markersize=5, clip_on=False)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate")
    axes.set_title("per-group learning rates; ▼ reselection (rewarm starts on the next step)", fontsize=9)
    if len(data["groups"]) <= 12:
        axes.legend(fontsize=6, ncol=2)
    _save(figure, path)


def draw_gradient_shares(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Table 6 as bars: per module type, the mean share held by random, final, localized and top-k blocks."""
    modules = list(data["summary"])
    keys = [("random", "random block"), ("final", "run's last subnet"), ("localized", "localized"), ("topk", "top-k")]
    figure = _figure(max(5.0, 0.9 * len(modules) + 2), 3.4)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(keys)
    for offset, (key, label) in enumerate(keys):
        axes.bar(
            np.arange(len(modules)) + offset * width,
            [data["summary"][m][key] for m in modules],
            width,
            label=label,
        )
    axes.set_xticks(np.arange(len(modules)) + 0.4 - width / 2, modules, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("share of |gradient| mass")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7)
    axes.set_title("gradient mass captured by a block of the run's size (probe batch)", fontsize=9)
    _save(figure, path)
