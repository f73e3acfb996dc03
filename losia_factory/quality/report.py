"""Markdown tables of the quality harness's results, and their place in docs/quality.md."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

START = "<!-- quality:results:start -->"
END = "<!-- quality:results:end -->"


def best_runs(runs: dict[str, dict[str, Any]], method_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The best run of each method over its learning rates: highest accuracy, then lowest answer NLL."""
    best: dict[str, dict[str, Any]] = {}
    for method_id in method_ids:
        candidates = [r for r in runs.values() if r.get("method") == method_id]
        if candidates:
            best[method_id] = max(candidates, key=lambda r: (r["accuracy"], -r["answer_nll"]))
    return best


def _lr(value: float | None) -> str:
    return "-" if value is None else f"{value:.0e}".replace("e-0", "e-")


def _row(run: dict[str, Any], tried: str) -> str:
    train = "-" if "train_s" not in run else f"{run['train_s']:.0f}"
    loss = "-" if "final_loss" not in run else f"{run['final_loss']:.3f}"
    return (
        f"| {run['label']} | {_lr(run['lr'])} | {run['accuracy']:.1f} | {run['answer_nll']:.3f} | "
        f"{run['forgetting']:+.3f} | {loss} | {train} | {tried} |"
    )


HEADER = (
    "| Method | lr | Accuracy (%) | Answer NLL | Forgetting | Train loss | Train time (s) | {last} |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|"
)


def results_markdown(runs: dict[str, dict[str, Any]], method_ids: list[str]) -> str:
    """Two tables: the best learning rate of every method, then every run."""
    best = best_runs(runs, method_ids)
    lines = [HEADER.format(last="lrs tried")]
    if "base" in runs:
        lines.append(_row(runs["base"], "-"))
    for method_id, run in best.items():
        tried = ", ".join(_lr(r["lr"]) for r in sorted(_of(runs, method_id), key=lambda r: r["lr"]))
        lines.append(_row(run, tried))
    lines += ["", "All runs:", "", HEADER.format(last="Run")]
    for method_id in method_ids:
        for run in sorted(_of(runs, method_id), key=lambda r: r["lr"]):
            lines.append(_row(run, f"`{method_id}@{run['lr']:g}`"))
    return "\n".join(lines) + "\n"


def _of(runs: dict[str, dict[str, Any]], method_id: str) -> list[dict[str, Any]]:
    return [r for r in runs.values() if r.get("method") == method_id]


def write_into(doc: Path, block: str) -> None:
    """Replace the generated block of ``doc`` (between the markers), keeping the hand-written text around it."""
    generated = f"{START}\n{block.rstrip()}\n{END}\n"
    if not doc.exists():
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text("# Quality on a real pretrained model\n\n" + generated, encoding="utf-8")
        return
    text = doc.read_text(encoding="utf-8")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + generated + ("\n" + tail if tail else "")
    else:
        text = text.rstrip() + "\n\n" + generated
    doc.write_text(text, encoding="utf-8")
