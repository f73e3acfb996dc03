"""One paper table end to end: prepare the data, train, merge (continual LoRA), evaluate, collect, render.

Every stage leaves a marker on disk and is skipped when its marker is there, so an interrupted run continues where it
stopped (``--force`` redoes them). A training run that stopped after writing a checkpoint resumes from it (LoSiA
resumes exactly; PiLoRA cannot resume and restarts). ``dry_run`` prints every command instead of running it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import write_json_atomic
from .settings import DATA_DIR, DERIVED_TABLES, MODELS, SAVES_DIR, Experiment, experiments_for

MARKER = "reproduce_stages.json"


class PipelineError(RuntimeError):
    """A stage failed or the options cannot work; the message says which and what to do."""


@dataclass
class PipelineOptions:
    """What to run and how.

    Attributes:
        root: Directory holding ``data/paper`` and ``saves/paper`` (commands run there).
        recipes_root: Repository root holding ``recipes/paper``.
        only: Experiment names to run (default: all of the table's).
        models: Keep only experiments on these model keys.
        datasets: Keep only experiments training on these data keys.
        model_paths: Model key -> local path or hub id replacing the paper's backbone.
        train_overrides: ``key=value`` arguments appended to every ``llamafactory-cli train`` command.
        data_sources: Data key -> local copy in the dataset's own schema.
        max_samples: Cap on the samples drawn from each training set (smoke runs).
        seed: Sampling seed of the training sets.
        eval_limit: lm-eval ``--limit`` (smoke runs).
        eval_batch_size: lm-eval batch size.
        eval_device: lm-eval device (default: lm-eval's choice).
        eval_dtype: Model dtype for evaluation.
        task_map: Metric column -> lm-eval task replacing the paper's (local stand-ins, mirrors).
        include_paths: Extra lm-eval task folders.
        force: Redo stages that are marked done.
        dry_run: Print the commands only.
        llamafactory_cli: The ``llamafactory-cli`` executable.
    """

    root: Path = Path(".")
    recipes_root: Path = Path(__file__).resolve().parents[2]
    only: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    model_paths: dict[str, str] = field(default_factory=dict)
    train_overrides: dict[str, str] = field(default_factory=dict)
    data_sources: dict[str, str] = field(default_factory=dict)
    max_samples: int | None = None
    seed: int = 42
    eval_limit: float | None = None
    eval_batch_size: str = "auto"
    eval_device: str | None = None
    eval_dtype: str = "bfloat16"
    task_map: dict[str, str] = field(default_factory=dict)
    include_paths: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    llamafactory_cli: str = "llamafactory-cli"


def _log(message: str) -> None:
    print(f"[reproduce] {message}", flush=True)


def select(table: str, options: PipelineOptions) -> list[Experiment]:
    """The experiments of ``table`` kept by the filters, in run order; unknown names or keys are refused."""
    chosen = experiments_for(table)
    names = {e.name for e in chosen}
    unknown = [n for n in options.only if n not in names]
    if unknown:
        raise PipelineError(
            f"--only: {', '.join(unknown)} not in table {table}; its experiments are listed by "
            f"`python scripts/reproduce.py {table} --list`."
        )
    for flag, values, known in (
        ("--model", options.models, {e.model for e in chosen}),
        ("--dataset", options.datasets, {k for e in chosen for k, _ in e.train_sets}),
    ):
        bad = [v for v in values if v not in known]
        if bad:
            raise PipelineError(f"{flag}: {', '.join(bad)} not used by table {table}; choose from {sorted(known)}.")
    bad_models = [k for k in options.model_paths if k not in MODELS]
    if bad_models:
        raise PipelineError(f"--model-path: unknown model key(s) {bad_models}; choose from {sorted(MODELS)}.")
    if options.only:
        chosen = [e for e in chosen if e.name in options.only]
    if options.models:
        chosen = [e for e in chosen if e.model in options.models]
    if options.datasets:
        chosen = [e for e in chosen if any(k in options.datasets for k, _ in e.train_sets)]
    if not chosen:
        raise PipelineError(f"No experiment of table {table} matches the filters.")
    return chosen


class Pipeline:
    """Runs the stages of a list of experiments.

    Args:
        table: The table being reproduced (its results are collected and rendered at the end).
        options: See :class:`PipelineOptions`.
        run_command: Runs one command (argv) in ``options.root``; replaced in tests.
    """

    def __init__(
        self, table: str, options: PipelineOptions, run_command: Callable[[list[str], Path], None] | None = None
    ) -> None:
        self.table = table
        self.options = options
        self.root = options.root.resolve()
        self.selected = select(table, options)
        self.all = {e.name: e for e in experiments_for(table)}
        self.run_command = run_command or _run
        self.commands: list[str] = []

    # ---- paths -----------------------------------------------------------------------------------------------
    def output(self, exp: Experiment) -> Path:
        return self.root / exp.output_dir

    def data_dir(self) -> Path:
        return self.root / DATA_DIR

    def base_model(self, exp: Experiment) -> str:
        """The model an experiment trains (the previous stage's output for continual learning)."""
        if exp.after is not None:
            return str(self.root / exp.args["model_name_or_path"])
        return self.options.model_paths.get(exp.model, exp.args["model_name_or_path"])

    # ---- markers -----------------------------------------------------------------------------------------------
    def _markers(self, exp: Experiment) -> dict[str, Any]:
        path = self.output(exp) / MARKER
        return json.loads(path.read_text()) if path.is_file() else {}

    def done(self, exp: Experiment, stage: str) -> bool:
        return not self.options.force and stage in self._markers(exp)

    def _mark(self, exp: Experiment, stage: str, **info: Any) -> None:
        markers = self._markers(exp)
        markers[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        write_json_atomic(self.output(exp) / MARKER, markers)

    # ---- stages ------------------------------------------------------------------------------------------------
    def _execute(self, argv: list[str]) -> None:
        line = shlex.join(argv)
        self.commands.append(line)
        if self.options.dry_run:
            print(line, flush=True)
            return
        _log(f"$ {line}")
        self.run_command(argv, self.root)

    def prepare(self) -> None:
        """Prepare every training set the selected experiments need (skipped when the manifest matches)."""
        needed: dict[tuple[str, int | None], None] = {}
        for exp in self.selected:
            needed.update(dict.fromkeys(exp.train_sets))
        from .data import dataset_name

        for key, paper_samples in needed:
            samples = paper_samples
            if self.options.max_samples is not None:
                samples = min(samples, self.options.max_samples) if samples else self.options.max_samples
            name = dataset_name(key, paper_samples)  # the name the recipes use, even when capped
            if self.options.dry_run:
                argv = [sys.executable, "scripts/prepare_data.py", "--dataset", f"{key}:{samples}" if samples else key]
                argv += ["--data-dir", str(self.data_dir()), "--seed", str(self.options.seed)]
                if name != dataset_name(key, samples):
                    argv += ["--name", name]
                if key in self.options.data_sources:
                    argv += ["--source", f"{key}={self.options.data_sources[key]}"]
                self._execute(argv)
                continue
            from .data import prepare_dataset

            _log(f"prepare {key}" + (f" ({samples} samples)" if samples else ""))
            prepare_dataset(
                key,
                self.data_dir(),
                samples=samples,
                seed=self.options.seed,
                source=self.options.data_sources.get(key),
                name=name,
            )

    def train_command(self, exp: Experiment) -> list[str]:
        recipe = self.options.recipes_root / exp.recipe_path
        if not recipe.is_file():
            raise PipelineError(f"{exp.recipe_path} is missing: run `make recipes` in the repository first.")
        argv = [self.options.llamafactory_cli, "train", str(recipe)]
        argv += [f"dataset_dir={self.data_dir()}", f"output_dir={self.output(exp)}"]
        if exp.after is not None or exp.model in self.options.model_paths:
            argv.append(f"model_name_or_path={self.base_model(exp)}")
        argv += [f"{k}={v}" for k, v in self.options.train_overrides.items()]
        return argv

    def train(self, exp: Experiment) -> None:
        if self.done(exp, "train"):
            _log(f"train {exp.name}: done, skipped")
            return
        if exp.after is not None and self.all[exp.after].is_adapter:
            self.merge(self.all[exp.after])  # LoRA stages are merged into the backbone before the next task
        if exp.after is not None and not self.options.dry_run:
            start = Path(self.base_model(exp))
            if not (start / "config.json").is_file():
                raise PipelineError(
                    f"{exp.name} starts from {start}, which does not exist yet: run {exp.after} first "
                    f"(`python scripts/reproduce.py {self.table}` runs the stages in order)."
                )
        argv = self.train_command(exp)
        checkpoint = _last_checkpoint(self.output(exp))
        if checkpoint is not None and exp.method != "pilora" and not self.options.force:
            _log(f"train {exp.name}: resuming from {checkpoint.name}")
            argv += [f"resume_from_checkpoint={checkpoint}", "overwrite_output_dir=false"]
        self._execute(argv)
        if not self.options.dry_run:
            if not (self.output(exp) / "train_results.json").is_file():
                raise PipelineError(f"training {exp.name} ended without train_results.json in {self.output(exp)}.")
            self._mark(exp, "train", command=shlex.join(argv))

    def merge(self, exp: Experiment) -> None:
        """Merge a LoRA into its backbone so the next continual-learning stage starts from the merged model."""
        if not self.options.dry_run and not (self.output(exp) / "adapter_config.json").is_file():
            raise PipelineError(
                f"{exp.name} has no trained adapter in {self.output(exp)} to merge: run it first "
                f"(`python scripts/reproduce.py {self.table}` runs the stages in order)."
            )
        if self.done(exp, "merge") and (self.output(exp) / "merged" / "config.json").is_file():
            _log(f"merge {exp.name}: done, skipped")
            return
        argv = [
            self.options.llamafactory_cli,
            "export",
            f"--model_name_or_path={self.base_model(exp)}",
            f"--adapter_name_or_path={self.output(exp)}",
            "--finetuning_type=lora",
            f"--template={exp.args['template']}",
            f"--export_dir={self.output(exp) / 'merged'}",
        ]
        self._execute(argv)
        if not self.options.dry_run:
            self._mark(exp, "merge", command=shlex.join(argv))

    def eval_model(self, exp: Experiment) -> tuple[str, str | None]:
        """(model, adapter) that lm-eval loads for ``exp``."""
        if exp.is_adapter:
            return self.base_model(exp), str(self.root / exp.adapter_dir)
        return str(self.output(exp)), None

    def evaluate(self, exp: Experiment) -> None:
        from .evaluation import evaluate, lm_eval_commands

        model, adapter = self.eval_model(exp)
        kwargs = dict(
            adapter_dir=adapter,
            batch_size=self.options.eval_batch_size,
            device=self.options.eval_device,
            dtype=self.options.eval_dtype,
            limit=self.options.eval_limit,
            task_map=self.options.task_map or None,
            include_paths=self.options.include_paths,
        )
        output = self.output(exp) / "eval"
        if self.options.dry_run:
            for argv in lm_eval_commands(model, list(exp.eval_columns), output, **kwargs):
                self._execute(argv)
            return
        _log(f"evaluate {exp.name}: {', '.join(exp.eval_columns)}")
        evaluate(model, list(exp.eval_columns), output, **kwargs)

    def run(self) -> dict[str, Any] | None:
        """All stages of the selected experiments, then the collected table (None in a dry run)."""
        _log(f"table {self.table}: {len(self.selected)} experiment(s)")
        self.prepare()
        for i, exp in enumerate(self.selected, start=1):
            _log(f"[{i}/{len(self.selected)}] {exp.name}")
            self.train(exp)
            self.evaluate(exp)
        if self.options.dry_run:
            argv = [sys.executable, "scripts/make_tables.py", "--results", str(self.root / SAVES_DIR / "results.json")]
            self._execute([*argv, "--tables", self.table])
            return None
        results = collect(self.root, [self.table])
        path = write_results(self.root, results)
        from .tables import render_table

        text = render_table(self.table, results["tables"].get(self.table, {}).get("values", {}))
        (self.root / SAVES_DIR / f"{self.table}.md").write_text(text)
        _log(f"results: {path}; table: {self.root / SAVES_DIR / f'{self.table}.md'}")
        print(text)
        return results


def _last_checkpoint(output: Path) -> Path | None:
    if not output.is_dir() or (output / "train_results.json").is_file():
        return None
    checkpoints = [p for p in output.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _executable(name: str) -> str:
    """``name`` from this interpreter's environment when it is there (an unactivated venv), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    if shutil.which(name) is None and not Path(name).is_file():
        raise PipelineError(f"{name} is not on PATH: activate the environment where llamafactory is installed.")
    return name


def _run(argv: list[str], cwd: Path) -> None:
    env = dict(os.environ)
    # torchrun and the training subprocess look for tools on PATH: put this environment's first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    result = subprocess.run([_executable(argv[0]), *argv[1:]], cwd=cwd, env=env)
    if result.returncode != 0:
        raise PipelineError(f"command failed with exit code {result.returncode}: {shlex.join(argv)}")


# ---- collecting ----------------------------------------------------------------------------------------------------


def _latency_us_per_token(output: Path) -> float | None:
    """Training time per input token from the trainer's state (``include_num_input_tokens_seen`` in the recipes)."""
    state, results = output / "trainer_state.json", output / "train_results.json"
    if not state.is_file() or not results.is_file():
        return None
    tokens = json.loads(state.read_text()).get("num_input_tokens_seen") or 0
    runtime = json.loads(results.read_text()).get("train_runtime")
    if not tokens or not runtime:
        return None
    return runtime / tokens * 1e6


def collect(root: Path, tables: list[str]) -> dict[str, Any]:
    """Our values for ``tables`` from the evaluation summaries on disk.

    A cell filled by several runs (Table 2's learning-rate pairs) keeps the best, as the paper reports; ``runs``
    names the run behind every row.
    """
    from .evaluation import continual_metrics, read_summary

    out: dict[str, Any] = {"tables": {}}
    for table in tables:
        source = DERIVED_TABLES.get(table, table)
        values: dict[str, dict[str, float]] = {}
        runs: dict[str, dict[str, str]] = {}
        for exp in experiments_for(source):
            output = root / exp.output_dir
            summary = read_summary(output / "eval") if (output / "eval").is_dir() else {}
            for cell in exp.cells:
                if cell.table != source or cell.source not in summary:
                    continue
                row = values.setdefault(cell.row, {})
                if cell.column not in row or summary[cell.source] > row[cell.column]:
                    row[cell.column] = summary[cell.source]
                    runs.setdefault(cell.row, {})[cell.column] = exp.output_dir
            latency = _latency_us_per_token(output) if source == "losia_t1" else None
            if latency is not None:
                row_name = next((c.row for c in exp.cells if c.table == "losia_t1"), None)
                if row_name is not None:
                    values.setdefault(row_name, {})["latency_us_per_token"] = round(latency, 1)
        if table in DERIVED_TABLES:
            values = _continual_table(values, continual_metrics)
        out["tables"][table] = {"values": values, "runs": runs}
    return out


def _continual_table(t13: dict[str, dict[str, float]], metrics: Callable) -> dict[str, dict[str, float]]:
    """Table 5 (AP, FWT, BWT) from Table 13's accuracy matrix, for each method whose matrix is complete."""
    from .settings import CONTINUAL_ORDER

    out = {}
    for method in ("Seq-LoRA", "Seq-LoSiA"):
        rows = [t13.get(f"{method} / {task}", {}) for task in CONTINUAL_ORDER]
        stages = [f"stage_{i}" for i in range(1, len(CONTINUAL_ORDER) + 1)]
        if all(all(s in r for s in stages) and "st" in r for r in rows):
            # matrix[i][j]: accuracy on task j after training stage i.
            matrix = [[rows[j][stage] for j in range(len(rows))] for stage in stages]
            out[method] = metrics(matrix, [r["st"] for r in rows])
    return out


def write_results(root: Path, results: dict[str, Any]) -> Path:
    """Merge ``results`` into ``saves/paper/results.json`` (other tables' entries are kept)."""
    path = root / SAVES_DIR / "results.json"
    merged = json.loads(path.read_text()) if path.is_file() else {"tables": {}}
    merged["tables"].update(results["tables"])
    return write_json_atomic(path, merged, sort_keys=True)
