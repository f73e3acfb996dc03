"""The paper tables in markdown with our numbers beside the paper's, and training-loss curves (the paper's Fig. 6).

A cell reads ``paper → ours (±diff)``; ``–`` marks a value we do not have. Our ``avg`` is computed the way the paper
averages (the columns listed in the table's ``avg_of``), and only when every one of them is present.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

PAPER_RESULTS = Path(__file__).resolve().parent / "paper_results.json"
Values = dict[str, dict[str, float]]


@cache
def load_paper_results() -> dict[str, Any]:
    """The papers' tables (``paper_results.json``)."""
    return json.loads(PAPER_RESULTS.read_text())["tables"]


def load_ours(path: str | Path) -> dict[str, Values]:
    """Our collected values per table from ``saves/paper/results.json`` (``{"tables": {id: {"values": ...}}}``)."""
    data = json.loads(Path(path).read_text())
    return {table: entry.get("values", {}) for table, entry in data.get("tables", {}).items()}


def with_average(table_id: str, values: Values) -> Values:
    """``values`` plus ``avg`` per row, over the columns the paper averages, where all of them are present."""
    columns = load_paper_results()[table_id].get("avg_of")
    out = {row: dict(cells) for row, cells in values.items()}
    if columns:
        for cells in out.values():
            if "avg" not in cells and all(c in cells for c in columns):
                cells["avg"] = sum(cells[c] for c in columns) / len(columns)
    return out


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}"


def _cell(paper: float | None, ours: float | None) -> str:
    if paper is None and ours is None:
        return ""
    text = f"{_number(paper)} → {_number(ours)}"
    if paper is not None and ours is not None:
        text += f" ({ours - paper:+.2f})"
    return text


def render_table(table_id: str, ours: Values | None = None) -> str:
    """One table in markdown: the paper's rows in order (then rows only we have), ``paper → ours (±diff)`` cells.

    With ``ours`` None the cells hold the paper's numbers alone.
    """
    tables = load_paper_results()
    if table_id not in tables:
        raise KeyError(f"Unknown table {table_id!r}; known: {', '.join(tables)}.")
    spec = tables[table_id]
    paper_only = ours is None
    ours = with_average(table_id, ours or {})
    columns = spec["columns"]
    labels = spec["column_labels"]
    rows = list(spec["rows"]) + [r for r in ours if r not in spec["rows"]]
    lines = [
        f"### {spec['paper']} paper, {spec['source']}: {spec['caption']}",
        "",
        "| " + " | ".join(["Row", *(labels[c] for c in columns)]) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in rows:
        paper_row, our_row = spec["values"].get(row, {}), ours.get(row, {})
        if paper_only:
            cells = [_number(paper_row[c]) if c in paper_row else "" for c in columns]
        else:
            cells = [_cell(paper_row.get(c), our_row.get(c)) for c in columns]
        lines.append("| " + " | ".join([row, *cells]) + " |")
    if spec.get("notes"):
        lines += ["", spec["notes"]]
    return "\n".join(lines) + "\n"


def render_all(ours_by_table: dict[str, Values] | None = None, tables: list[str] | None = None) -> str:
    """Every table (or ``tables``) one after another, with a legend."""
    chosen = tables or list(load_paper_results())
    legend = "Accuracies in percent; memory in GB, latency in µs per token, time in hours (lower is better for those)."
    if ours_by_table is not None:
        legend = "Cells read `paper → ours (difference)`; `–` marks a value not measured (yet). " + legend
    parts = [legend, ""]
    parts += [render_table(t, None if ours_by_table is None else ours_by_table.get(t, {})) for t in chosen]
    return "\n".join(parts)


def read_loss_log(run_dir: str | Path) -> tuple[list[int], list[float]]:
    """(steps, losses) of a training run from LLaMA-Factory's ``trainer_log.jsonl`` or ``trainer_state.json``."""
    run_dir = Path(run_dir)
    steps: list[int] = []
    losses: list[float] = []
    log = run_dir / "trainer_log.jsonl"
    state = run_dir / "trainer_state.json"
    if log.is_file():
        for line in log.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if "loss" in entry and "current_steps" in entry:
                steps.append(int(entry["current_steps"]))
                losses.append(float(entry["loss"]))
    elif state.is_file():
        for entry in json.loads(state.read_text()).get("log_history", []):
            if "loss" in entry and "step" in entry:
                steps.append(int(entry["step"]))
                losses.append(float(entry["loss"]))
    else:
        raise FileNotFoundError(f"{run_dir} has neither trainer_log.jsonl nor trainer_state.json (is it a run?).")
    if not steps:
        raise ValueError(f"{run_dir} logged no training loss.")
    return steps, losses


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average (``weight`` 0: unchanged), bias-corrected so the first points are not pulled to 0."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}.")
    out, average = [], 0.0
    for i, v in enumerate(values, start=1):
        average = weight * average + (1 - weight) * v
        out.append(average / (1 - weight**i) if weight else v)
    return out


def plot_loss_curves(
    runs: dict[str, str | Path], out_png: str | Path, smoothing: float = 0.6, title: str | None = None
) -> Path:
    """Plot the training loss of each run against the step, one line per run (Fig. 6 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("no run to plot: give at least one LABEL=DIR.")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, run_dir in runs.items():
        steps, losses = read_loss_log(run_dir)
        ax.plot(steps, smooth(losses, smoothing), label=label, linewidth=1.4)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss" + (f" (EMA {smoothing:g})" if smoothing else ""))
    ax.set_title(title or "Training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=130)
    plt.close(fig)
    return out_png
