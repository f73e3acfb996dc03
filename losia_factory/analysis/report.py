"""``losia-factory analyze``: every figure of a run, its numbers as JSON, and one ``analysis.md`` tying them together.

Which figures need what (the others are skipped with a note when their inputs are missing, or refused up front
when asked for by name):

============  ===================================================  ======================================
figure        needs                                                 file
============  ===================================================  ======================================
subnets       the run's logs only                                   ``fig3_subnet_positions.png``
frequency     the run's logs only                                   ``fig7_selection_frequency.png``
lr            the run's logs only                                   ``lr_timeline.png``
coverage      the logs; the "changed" half reads base + trained     ``coverage.png``
              weights tensor by tensor
similarity    base + trained weights, tensor by tensor (and the     ``fig8_singular_similarity.png``
              compared run's)
gradient      builds the trained model and runs one probe batch     ``table6_gradient_share.png``
============  ===================================================  ======================================
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..fileio import write_json_atomic, write_text_atomic
from ..model_files import NotAFullModelError, WeightReader, weight_map
from . import render
from .gradient import gradient_shares, probe_gradients, probe_texts
from .run import RunLog, load_run
from .subnets import frequencies, positions, resolve_target, trained_coverage
from .timeline import lr_timeline
from .weights import ComparedWeights, changed_share, similarity_table

FIGURES = ("subnets", "frequency", "lr", "coverage", "similarity", "gradient")
FILES = {
    "subnets": "fig3_subnet_positions.png",
    "frequency": "fig7_selection_frequency.png",
    "lr": "lr_timeline.png",
    "coverage": "coverage.png",
    "similarity": "fig8_singular_similarity.png",
    "gradient": "table6_gradient_share.png",
}
JSON_FILE = "analysis.json"
REPORT_FILE = "analysis.md"


def _is_full_model(folder: Path) -> bool:
    try:
        weight_map(folder)
    except NotAFullModelError:
        return False
    return True


def resolve_base(run: RunLog, base: str | os.PathLike[str] | None) -> Path | None:
    """``--base`` when given (it must be a full model), else the base folder the run recorded, if it still exists."""
    if base is not None:
        weight_map(base, "--base")  # a clear error now when --base is not a model folder
        return Path(base)
    recorded = (run.base_model or {}).get("path")
    if recorded and _is_full_model(Path(recorded)):
        return Path(recorded)
    return None


def analyze(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
    compare: str | os.PathLike[str] | None = None,
    figures: list[str] | None = None,
    layer: str | None = None,
    probe: str | os.PathLike[str] | None = None,
    probe_samples: int = 16,
    top: int = 500,
    svd_layers: list[int] | None = None,
) -> dict[str, Any]:
    """Write the figures, ``analysis.json`` and ``analysis.md`` of a LoSiA run into ``out`` (default RUN_DIR/analysis).

    Args:
        run_dir: The run's output folder.
        out: Output folder.
        base: The base model folder (default: the one the run recorded, when it still exists).
        compare: A second run over the same base (a LoRA adapter or a full model) for Fig. 8.
        figures: Figures to make (default: all whose inputs exist); see the module docstring.
        layer: The layer of Fig. 3 (default: the first module of the middle decoder layer).
        probe: Probe data for the gradient table (default: the bundled demo dataset).
        probe_samples: Records in the probe batch.
        top: Singular vectors compared per weight in Fig. 8.
        svd_layers: Decoder layers of Fig. 8 (default: all; an SVD per weight is slow for 7B-sized matrices).

    Returns:
        The content of ``analysis.json``.
    """
    run_dir = Path(run_dir)
    explicit = figures is not None
    wanted = list(FIGURES) if figures is None else list(dict.fromkeys(figures))
    unknown = [f for f in wanted if f not in FIGURES]
    if unknown:
        raise ValueError(f"--figures: unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}.")
    if probe is not None and not Path(probe).is_file():
        raise FileNotFoundError(f"--probe {probe} is not a file.")
    if probe_samples < 1 or top < 1:
        raise ValueError("--probe-samples and --top must be at least 1.")
    run = load_run(run_dir)
    target = resolve_target(run, layer) if "subnets" in wanted else None
    base_dir = resolve_base(run, base)
    has_weights = _is_full_model(run_dir)
    notes: list[str] = []
    skip: dict[str, str] = {}
    for figure in ("similarity", "gradient"):
        if figure not in wanted:
            continue
        reason = None
        if not has_weights:
            reason = f"RUN_DIR {run_dir} holds no full model (model.safetensors)"
        elif figure == "similarity" and base_dir is None:
            reason = "it needs the base model's weights: pass --base (the run did not record an existing folder)"
        if reason is not None:
            if explicit:
                raise ValueError(f"--figures {figure}: {reason}.")
            skip[figure] = reason
    if compare is not None and "similarity" in wanted and "similarity" not in skip:
        compared = ComparedWeights(compare, WeightReader(base_dir, "--base") if base_dir else None)
    else:
        compared = None
    out_dir = Path(out) if out is not None else run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "run_dir": str(run_dir),
        "base": None if base_dir is None else str(base_dir),
        "final_step": run.final_step,
        "targets": len(run.targets),
        "figures": {},
        "skipped": skip,
        "seconds": {},
    }
    for figure in wanted:
        if figure in skip:
            continue
        started = time.perf_counter()
        data, needs = _make(
            figure, run, run_dir, base_dir, has_weights, target, compared, notes, probe, probe_samples, top, svd_layers
        )
        _draw(figure, data, out_dir / FILES[figure])
        results["figures"][figure] = {"file": FILES[figure], "needs": needs, "data": data}
        results["seconds"][figure] = round(time.perf_counter() - started, 3)
    results["notes"] = notes
    write_json_atomic(out_dir / JSON_FILE, results)
    write_text_atomic(out_dir / REPORT_FILE, report_markdown(results))
    return results


def _make(
    figure: str,
    run: RunLog,
    run_dir: Path,
    base_dir: Path | None,
    has_weights: bool,
    target: Any,
    compared: ComparedWeights | None,
    notes: list[str],
    probe: Any,
    probe_samples: int,
    top: int,
    svd_layers: list[int] | None,
) -> tuple[dict[str, Any], str]:
    if figure == "subnets":
        return positions(target), "logs"
    if figure == "frequency":
        return frequencies(run), "logs"
    if figure == "lr":
        return lr_timeline(run), "logs"
    if figure == "coverage":
        data: dict[str, Any] = {"trained": trained_coverage(run), "changed": None, "outside_blocks": None}
        if base_dir is None or not has_weights:
            notes.append(
                "coverage: only the 'ever in a block' half (the 'changed' half needs --base and the weights)."
            )
            return data, "logs"
        with WeightReader(base_dir, "--base") as base, WeightReader(run_dir, "RUN_DIR") as trained:
            changed = changed_share(run, base, trained)
        data["changed"] = {name: row["changed"] for name, row in changed["targets"].items()}
        data["outside_blocks"] = {name: row["outside_blocks"] for name, row in changed["targets"].items()}
        data["other_changed"] = changed["other_changed"]
        return data, "logs + base and trained weights"
    if figure == "similarity":
        assert base_dir is not None
        with WeightReader(base_dir, "--base") as base, WeightReader(run_dir, "RUN_DIR") as trained:
            layers = None if svd_layers is None else set(svd_layers)
            return similarity_table(run, base, trained, top, compared, layers), "base and trained weights"
    if figure == "gradient":
        from transformers import AutoTokenizer

        texts = probe_texts(AutoTokenizer.from_pretrained(str(run_dir)), probe, probe_samples)
        grads = probe_gradients(run_dir, run.targets, texts)
        strategy = ((run.config or {}).get("config") or {}).get("selection", "best")
        data = gradient_shares(run, grads, strategy)
        data["probe"] = {"source": str(probe) if probe else "bundled demo dataset", "samples": len(texts)}
        return data, "the trained model (forward + backward on the probe batch)"
    raise AssertionError(figure)


def _draw(figure: str, data: dict[str, Any], path: Path) -> None:
    if figure == "subnets":
        render.draw_positions(data, path)
    elif figure == "frequency":
        render.draw_frequencies(data, path)
    elif figure == "lr":
        render.draw_lr_timeline(data, path)
    elif figure == "coverage":
        render.draw_coverage(data["trained"], data["changed"], path)
    elif figure == "similarity":
        render.draw_similarity(data, path)
    elif figure == "gradient":
        render.draw_gradient_shares(data, path)


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def report_markdown(results: dict[str, Any]) -> str:
    """``analysis.md``: each figure with its key numbers (see docs/analysis.md for how to read them)."""
    figures = results["figures"]
    lines = [
        f"# LoSiA run analysis: {results['run_dir']}",
        "",
        f"{results['targets']} trained layers, {results['final_step']} optimizer steps; "
        f"base: {results['base'] or 'none'}.",
        "Numbers: `analysis.json`. How to read each figure: docs/analysis.md.",
        "",
    ]
    if "subnets" in figures:
        d = figures["subnets"]["data"]
        lines += [
            f"## Core-subnet positions over training (Fig. 3): {d['name']}",
            "",
            f"![subnets]({figures['subnets']['file']})",
            "",
            f"- {len(d['steps'])} subnets; on average a reselection keeps "
            f"{_mean(d['retained_out']):.0%} of the output neurons"
            + (f" and {_mean(d['retained_in']):.0%} of the input neurons" if d["retained_in"] else "")
            + ".",
            f"- ever in the block: {d['ever_out']:.0%} of the output neurons"
            + (f", {d['ever_in']:.0%} of the input neurons" if d["ever_in"] is not None else "")
            + ".",
            "",
        ]
    if "frequency" in figures:
        d = figures["frequency"]["data"]
        lines += [
            "## Selection frequency per module type (Fig. 7)",
            "",
            f"![frequency]({figures['frequency']['file']})",
            "",
            "| module | side | block share | never selected | (if random) | always selected | top 10% hold | gini |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for module, sides in d.items():
            for side, entry in sides.items():
                s = entry["summary"]
                lines.append(
                    f"| {module} | {side} | {s['kept']:.3f} | {s['never']:.1%} | {s['never_if_random']:.1%} | "
                    f"{s['always']:.1%} | "
                    f"{s['top10_share']:.1%} | {s['gini']:.3f} |"
                )
        lines.append("")
    if "lr" in figures:
        s = figures["lr"]["data"]["summary"]
        lowest = "n/a" if s["lowest_ratio"] is None else f"{s['lowest_ratio']:.2f}"
        share = "n/a" if s["rewarming_share"] is None else f"{s['rewarming_share']:.1%}"
        lines += [
            "## Per-group learning rates (rewarms and reselections)",
            "",
            f"![lr]({figures['lr']['file']})",
            "",
            f"- {s['groups']} groups, {s['logged_steps']} logged steps, {s['reselections']} reselections; "
            f"{share} of logged (step, group) rates were rewarming (below the base rate); "
            f"lowest rate / base: {lowest}.",
            "",
        ]
    if "coverage" in figures:
        d = figures["coverage"]["data"]
        lines += [
            "## Coverage: entries ever trained and entries changed, per layer",
            "",
            f"![coverage]({figures['coverage']['file']})",
            "",
            f"- mean share of each weight's entries ever in a block: {_mean(d['trained'].values()):.1%}"
            f" (min {min(d['trained'].values()):.1%}, max {max(d['trained'].values()):.1%}).",
        ]
        if d["changed"] is not None:
            outside = sum(d["outside_blocks"].values())
            lines.append(
                f"- mean share changed against the base: {_mean(d['changed'].values()):.1%}; entries changed outside "
                f"every recorded block: {outside}; other changed tensors: {len(d.get('other_changed') or {})}."
            )
        lines.append("")
    if "similarity" in figures:
        d = figures["similarity"]["data"]
        compare = d["compare_kind"]
        header = "| module | layers | LoSiA mean |cos| | LoSiA best-match | LoSiA intruders |"
        rule = "|---|---|---|---|---|"
        if compare:
            header += f" {compare} mean |cos| | {compare} best-match | {compare} intruders |"
            rule += "---|---|---|"
        lines += [
            f"## Top-{d['top']} singular vectors, base vs trained (Fig. 8)",
            "",
            f"![similarity]({figures['similarity']['file']})",
            "",
            header.replace("|cos|", "\\|cos\\|"),
            rule,
        ]
        for module, s in d["summary"].items():
            row = (
                f"| {module} | {s['layers']} | {s['losia_mean_aligned']:.3f} | {s['losia_mean_best']:.3f} | "
                f"{s['losia_intruders']} |"
            )
            if compare:
                row += f" {s['compare_mean_aligned']:.3f} | {s['compare_mean_best']:.3f} | {s['compare_intruders']} |"
            lines.append(row)
        lines.append("")
    if "gradient" in figures:
        d = figures["gradient"]["data"]
        lines += [
            "## Gradient mass captured by the subnet (Table 6 in small)",
            "",
            f"![gradient]({figures['gradient']['file']})",
            "",
            f"Probe: {d['probe']['samples']} records of the {d['probe']['source']}; selection strategy "
            f"`{d['strategy']}`.",
            "",
            "| module | random block | run's last subnet | localized subnet | top-k (ideal) |",
            "|---|---|---|---|---|",
        ]
        for module, s in d["summary"].items():
            lines.append(
                f"| {module} | {s['random']:.1%} | {s['final']:.1%} | {s['localized']:.1%} | {s['topk']:.1%} |"
            )
        lines.append("")
    if results["skipped"] or results["notes"]:
        lines += ["## Not drawn", ""]
        lines += [f"- {figure}: {reason}." for figure, reason in results["skipped"].items()]
        lines += [f"- {note}" for note in results["notes"]]
        lines.append("")
    return "\n".join(lines)
