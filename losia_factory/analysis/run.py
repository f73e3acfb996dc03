"""Reading a LoSiA run's own files: the subnets of every period, the per-group learning rates, the settings.

Inputs, all written by :class:`~losia_factory.hf.callback.LosiaCallback` into the run's output folder:

* ``losia_subnets.jsonl``: a ``start`` line (every target's shape and indices), one ``reselect`` line per reselection
  (the new indices of the reselected groups' targets) and an ``end`` line;
* ``losia_log.jsonl``: the per-group learning rates at every logging step and the reselection events;
* ``losia_config.json``: the LoSiA settings (optional).

A line's ``step`` counts finished optimizer steps, so the indices of a line at ``step = s`` train steps ``s + 1``
onward. A run resumed in the same folder appends a second ``start`` line at its checkpoint's step: the lines of the
interrupted attempt after that step are dropped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SUBNETS_FILE = "losia_subnets.jsonl"
LOG_FILE = "losia_log.jsonl"
CONFIG_FILE = "losia_config.json"
# Module types in the order a LLaMA-style decoder layer runs them; others follow alphabetically.
MODULE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class RunFilesError(ValueError):
    """A run folder lacks the files an analysis needs, or they are not what LoSiA writes."""


def module_type_and_layer(name: str) -> tuple[str, int | None]:
    """``model.layers.12.self_attn.q_proj`` -> ``("q_proj", 12)``; ``lm_head`` -> ``("lm_head", None)``."""
    index = re.search(r"\.(\d+)\.", f".{name}.")
    return name.rsplit(".", 1)[-1], int(index.group(1)) if index else None


def module_sort_key(module: str) -> tuple[int, str]:
    """Sort key of a module type: decoder order first, then by name."""
    return (MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER), module)


@dataclass
class Period:
    """One subnet of one target and the optimizer steps it trained: ``start + 1`` to ``end`` (1-based)."""

    start: int
    end: int
    out_idx: np.ndarray
    in_idx: np.ndarray | None

    @property
    def steps(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class Target:
    """One trained linear layer of the run and the succession of its subnets."""

    name: str
    group: int
    shape: tuple[int, int]
    periods: list[Period] = field(default_factory=list)

    @property
    def module(self) -> str:
        return module_type_and_layer(self.name)[0]

    @property
    def layer(self) -> int | None:
        return module_type_and_layer(self.name)[1]

    @property
    def num_out(self) -> int:
        return len(self.periods[0].out_idx)

    @property
    def num_in(self) -> int | None:
        first = self.periods[0].in_idx
        return None if first is None else len(first)


@dataclass
class RunLog:
    """What a LoSiA run recorded about itself."""

    folder: Path
    targets: dict[str, Target]
    final_step: int
    reselections: list[tuple[int, str]]
    lr_steps: list[int]
    lrs: dict[str, list[float | None]]
    base_model: dict[str, Any] | None
    config: dict[str, Any] | None

    @property
    def group_names(self) -> list[str]:
        return [name for name in self.lrs if name != "extra"]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RunFilesError(f"{path}:{number} is not valid JSON ({err}).") from None
    return records


def _drop_abandoned(records: list[dict[str, Any]], restart_kind: str | None = "start") -> list[dict[str, Any]]:
    """Keep the lines of the attempt that finished: a restart at step k drops the earlier lines after step k."""
    kept: list[dict[str, Any]] = []
    for record in records:
        if restart_kind is not None and record.get("event") == restart_kind:
            kept = [r for r in kept if int(r["step"]) <= int(record["step"]) and r.get("event") != "end"]
        kept.append(record)
    return kept


def load_run(folder: str | os.PathLike[str]) -> RunLog:
    """Read a run's ``losia_subnets.jsonl``, ``losia_log.jsonl`` and ``losia_config.json``.

    Raises:
        RunFilesError: ``losia_subnets.jsonl`` is missing (not a LoSiA run, or one trained before losia-factory
            recorded subnets) or malformed.
    """
    folder = Path(folder)
    path = folder / SUBNETS_FILE
    if not path.is_file():
        raise RunFilesError(
            f"RUN_DIR {folder} has no {SUBNETS_FILE}: pass the output folder of a `finetuning_type: losia` run "
            "trained with this version of losia-factory (its callback writes the file)."
        )
    records = _drop_abandoned(_read_jsonl(path))
    if not records or records[0].get("event") != "start":
        raise RunFilesError(f"{path} does not begin with a 'start' line; it was not written by LosiaCallback.")
    targets: dict[str, Target] = {}
    open_periods: dict[str, Period] = {}
    last_step = 0
    end_step = None
    base_model = None
    for record in records:
        step = int(record["step"])
        last_step = max(last_step, step)
        event = record.get("event")
        if event == "end":
            end_step = step
            continue
        if event == "start" and base_model is None:
            base_model = record.get("base_model")
        for entry in record.get("targets", []):
            name = entry["name"]
            if name not in targets:
                if "shape" not in entry:
                    raise RunFilesError(f"{path}: target {name} appears before any 'start' line gave its shape.")
                out_f, in_f = (int(v) for v in entry["shape"])
                targets[name] = Target(name, int(entry["group"]), (out_f, in_f))
            period = Period(
                step,
                step,
                np.asarray(entry["out_idx"], dtype=np.int64),
                None if entry.get("in_idx") is None else np.asarray(entry["in_idx"], dtype=np.int64),
            )
            current = open_periods.get(name)
            if event == "start" and current is not None and _same_subnet(current, period):
                continue  # a resumed run restates the subnet it resumes with
            if current is not None:
                current.end = step
            targets[name].periods.append(period)
            open_periods[name] = period
    log_path = folder / LOG_FILE
    log_records = _drop_abandoned(_read_jsonl(log_path), None) if log_path.is_file() else []
    lr_records = _deduplicate_steps([r for r in log_records if "lr" in r])
    if lr_records:
        last_step = max(last_step, int(lr_records[-1]["step"]))
    final = end_step if end_step is not None else last_step
    for period in open_periods.values():
        period.end = final
    reselections = [
        (int(r["step"]), group)
        for r in _deduplicate_steps([r for r in log_records if r.get("event") == "reselect"])
        for group in r["groups"]
    ]
    groups: list[str] = []
    for record in lr_records:
        groups += [g for g in record["lr"] if g not in groups]
    lrs = {g: [r["lr"].get(g) for r in lr_records] for g in groups}
    config_path = folder / CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    return RunLog(
        folder=folder,
        targets=targets,
        final_step=final,
        reselections=reselections,
        lr_steps=[int(r["step"]) for r in lr_records],
        lrs=lrs,
        base_model=base_model,
        config=config,
    )


def _deduplicate_steps(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step (the last one: a resumed attempt rewrites the steps after its checkpoint), sorted."""
    by_step = {int(r["step"]): r for r in records}
    return [by_step[s] for s in sorted(by_step)]


def _same_subnet(a: Period, b: Period) -> bool:
    if not np.array_equal(a.out_idx, b.out_idx):
        return False
    if a.in_idx is None or b.in_idx is None:
        return a.in_idx is None and b.in_idx is None
    return np.array_equal(a.in_idx, b.in_idx)
