"""Evaluation with lm-evaluation-harness: which lm-eval task and metric gives each paper column, and running it.

Every number comes from lm-eval's own output (``results_*.json``); this module only chooses the tasks, runs the
``lm_eval`` command line, and copies the chosen metric into ``<output_dir>/summary.json`` as a percentage.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fileio import write_json_atomic
from .settings import COMMONSENSE, DOMAIN_SETS

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
SUMMARY = "summary.json"


class EvaluationError(RuntimeError):
    """lm-eval is missing, failed, or did not report the metric a column needs."""


@dataclass(frozen=True)
class MetricColumn:
    """How lm-eval computes one paper column.

    Attributes:
        column: The column id used in the paper tables.
        task: lm-eval task (or group) name.
        num_fewshot: Few-shot examples.
        metric: Key of the value in lm-eval's results for the task, ``"<metric>,<filter>"``.
        ours: The task is one of ours (``lm_eval_tasks/``), passed with ``--include_path``.
        unsafe_code: The task executes generated code (lm-eval needs ``--confirm_run_unsafe_code``).
    """

    column: str
    task: str
    num_fewshot: int
    metric: str
    ours: bool = False
    unsafe_code: bool = False


COLUMNS = {
    c.column: c
    for c in (
        # MetaMathQA-tuned models end with "The answer is: N", not GSM8K's "#### N": the flexible filter (the last
        # number in the completion) scores both; the strict filter would score every MetaMathQA answer wrong.
        MetricColumn("gsm8k_5shot", "gsm8k", 5, "exact_match,flexible-extract"),
        MetricColumn("gsm8k_cot_0shot", "gsm8k_cot_zeroshot", 0, "exact_match,flexible-extract"),
        MetricColumn("mbpp_pass@1", "mbpp", 3, "pass_at_1,none", unsafe_code=True),
        MetricColumn("mbpp_pass@10", "losia_mbpp_pass_at_10", 3, "pass_at_10,candidates", ours=True, unsafe_code=True),
        MetricColumn("mmlu_0shot_ppl", "mmlu", 0, "acc,none"),
        MetricColumn("mmlu_5shot_gen", "mmlu_generative", 5, "exact_match,get_response"),
        *(MetricColumn(task, task, 0, "acc,none") for task in COMMONSENSE),
    )
}

SUITES = {
    "math": DOMAIN_SETS["metamathqa"].eval_columns,
    "code": DOMAIN_SETS["magicoder"].eval_columns,
    "general": DOMAIN_SETS["alpaca_gpt4"].eval_columns,
    "commonsense8": COMMONSENSE,
    **{task: (task,) for task in COMMONSENSE},
}


def suite_for(train_set: str) -> tuple[str, ...]:
    """The columns that evaluate a model trained on ``train_set`` (a data key, or a suite name)."""
    aliases = {"metamathqa": "math", "magicoder": "code", "alpaca_gpt4": "general", "commonsense170k": "commonsense8"}
    name = aliases.get(train_set, train_set)
    if name not in SUITES:
        raise EvaluationError(f"No evaluation suite for {train_set!r}; choose one of {sorted(SUITES | aliases)}.")
    return tuple(SUITES[name])


def _column(name: str) -> MetricColumn:
    if name not in COLUMNS:
        raise EvaluationError(f"Unknown metric column {name!r}; known columns: {', '.join(COLUMNS)}.")
    return COLUMNS[name]


def _task(column: MetricColumn, task_map: dict[str, str] | None) -> str:
    return (task_map or {}).get(column.column, column.task)


def lm_eval_commands(
    model: str | Path,
    columns: Sequence[str],
    output_dir: str | Path,
    *,
    adapter_dir: str | Path | None = None,
    batch_size: str | int = "auto",
    device: str | None = None,
    dtype: str = "bfloat16",
    limit: float | None = None,
    task_map: dict[str, str] | None = None,
    include_paths: Sequence[str | Path] = (),
    extra_model_args: str | None = None,
) -> list[list[str]]:
    """The ``lm_eval`` command lines that evaluate ``columns``, one per few-shot count (one count per lm-eval run).

    Args:
        model: Model directory or hub id (the base model when ``adapter_dir`` is given).
        columns: Metric columns (keys of :data:`COLUMNS`).
        output_dir: Where lm-eval writes its results (``<output_dir>/lm_eval_<n>shot/``).
        adapter_dir: A PEFT adapter to load on ``model`` (LoRA, DoRA, converted PiSSA, PiLoRA).
        batch_size: lm-eval batch size (``"auto"`` picks the largest that fits).
        device: ``cuda:0``, ``cpu``...; lm-eval's default when None.
        dtype: Model dtype.
        limit: Evaluate on the first ``limit`` documents (or fraction) of each task; None for the full sets.
        task_map: Column -> lm-eval task replacing :data:`COLUMNS`' (local stand-ins, mirrors).
        include_paths: Extra task folders.
        extra_model_args: Appended to ``--model_args`` (``key=value,...``).
    """
    specs = [_column(c) for c in columns]
    model_args = f"pretrained={model},dtype={dtype}"
    if adapter_dir is not None:
        model_args += f",peft={adapter_dir}"
    if extra_model_args:
        model_args += f",{extra_model_args}"
    includes = [str(p) for p in include_paths]
    if any(s.ours and _task(s, task_map) == s.task for s in specs):
        includes.insert(0, str(TASKS_DIR))
    commands = []
    for shots in sorted({s.num_fewshot for s in specs}):
        group = [s for s in specs if s.num_fewshot == shots]
        tasks = list(dict.fromkeys(_task(s, task_map) for s in group))
        argv = ["lm_eval", "--model", "hf", "--model_args", model_args, "--tasks", ",".join(tasks)]
        argv += ["--num_fewshot", str(shots), "--batch_size", str(batch_size)]
        argv += ["--output_path", str(Path(output_dir) / f"lm_eval_{shots}shot")]
        if device:
            argv += ["--device", device]
        if limit is not None:
            argv += ["--limit", f"{limit:g}"]
        for path in includes:
            argv += ["--include_path", path]
        if any(s.unsafe_code for s in group):
            argv.append("--confirm_run_unsafe_code")
        commands.append(argv)
    return commands


def read_summary(output_dir: str | Path) -> dict[str, float]:
    """The columns already evaluated in ``output_dir`` (``{}`` when none)."""
    path = Path(output_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_summary(output_dir: Path, summary: dict[str, float]) -> None:
    write_json_atomic(output_dir / SUMMARY, summary, sort_keys=True)


def latest_results(output_path: Path) -> dict:
    """lm-eval's newest ``results_*.json`` under ``output_path`` (it nests them in a folder named after the model)."""
    files = sorted(output_path.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise EvaluationError(f"lm-eval wrote no results_*.json under {output_path}.")
    return json.loads(files[-1].read_text())


def metric_value(results: dict, column: MetricColumn, task: str) -> float:
    """The column's value in percent from lm-eval's results."""
    per_task = results.get("results", {}).get(task)
    if per_task is None or column.metric not in per_task:
        have = sorted(per_task) if per_task else sorted(results.get("results", {}))
        raise EvaluationError(f"lm-eval's results have no {column.metric!r} for task {task!r} (found: {have}).")
    return round(100.0 * float(per_task[column.metric]), 4)


def _lm_eval_executable() -> str:
    local = Path(sys.executable).parent / "lm_eval"
    if local.is_file():
        return str(local)
    found = shutil.which("lm_eval")
    if found is None:
        raise EvaluationError('lm_eval is not installed: pip install "losia-factory[paper]" (lm-evaluation-harness).')
    return found


def evaluate(
    model: str | Path,
    columns: Sequence[str],
    output_dir: str | Path,
    *,
    skip_done: bool = True,
    **kwargs,
) -> dict[str, float]:
    """Evaluate ``columns`` with lm-eval and merge them into ``<output_dir>/summary.json``.

    Columns already in the summary are skipped (``skip_done``), so an interrupted evaluation continues. Other
    arguments are those of :func:`lm_eval_commands`.

    Returns:
        The whole summary: column -> value in percent.
    """
    output_dir = Path(output_dir)
    summary = read_summary(output_dir) if skip_done else {}
    todo = [c for c in columns if c not in summary]
    for c in todo:
        _column(c)
    if not todo:
        print(f"[evaluate] {output_dir}: {', '.join(columns)} already evaluated, skipped", flush=True)
        return summary
    env = dict(os.environ)
    env["HF_ALLOW_CODE_EVAL"] = "1"  # lm-eval's MBPP runs the generated programs (the user confirms by the column)
    task_map = kwargs.get("task_map")
    for argv in lm_eval_commands(model, todo, output_dir, **kwargs):
        print("[evaluate] $ " + shlex.join(argv), flush=True)
        result = subprocess.run([_lm_eval_executable(), *argv[1:]], env=env)
        if result.returncode != 0:
            raise EvaluationError(f"lm-eval failed with exit code {result.returncode}: {shlex.join(argv)}")
        shots = argv[argv.index("--num_fewshot") + 1]
        results = latest_results(output_dir / f"lm_eval_{shots}shot")
        for name in todo:
            spec = COLUMNS[name]
            if str(spec.num_fewshot) == shots:
                summary[name] = metric_value(results, spec, _task(spec, task_map))
        _write_summary(output_dir, summary)  # after every command: a later failure keeps what is done
    return summary


def continual_metrics(matrix: Sequence[Sequence[float]], single_task: Sequence[float]) -> dict[str, float]:
    """AP, FWT and BWT of a continual-learning run (LoSiA paper section 4.4).

    Args:
        matrix: ``matrix[i][j]`` = accuracy on task j after training on task i (i, j = 0..N-1, in training order).
        single_task: Accuracy of training each task alone (P_{0,i}).

    Returns:
        ``{"ap": mean_i P_{N,i}, "fwt": mean_i (P_{i,i} - P_{0,i}), "bwt": mean_{i<N} (P_{N,i} - P_{i,i})}``.
    """
    n = len(matrix)
    if n < 2 or any(len(row) != n for row in matrix) or len(single_task) != n:
        raise ValueError(f"need an N x N matrix (N >= 2) and N single-task values, got {n} rows, {len(single_task)}.")
    last = matrix[-1]
    return {
        "ap": round(sum(last) / n, 4),
        "fwt": round(sum(matrix[i][i] - single_task[i] for i in range(n)) / n, 4),
        "bwt": round(sum(last[i] - matrix[i][i] for i in range(n - 1)) / (n - 1), 4),
    }
