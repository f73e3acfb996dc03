"""The quality harness: train each method through ``llamafactory-cli`` on the real model, score it, tabulate.

A run is one (method, learning rate) pair. Its YAML, log and scores live in ``<work>/runs/<key>/``; finished runs are
recorded in ``<work>/results.json`` and skipped when the harness is started again, so an interrupted sweep resumes.
Trained weights are deleted after scoring (``keep_weights`` keeps them).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .task import GENERAL_PROMPTS, make_splits

DATASET = "quality_arith"
TEMPLATE = "smollm"


@dataclass(frozen=True)
class Settings:
    """What every run of a sweep shares: data sizes, steps, batch, schedule."""

    steps: int = 100
    batch_size: int = 8
    warmup_steps: int = 10
    num_train: int = 2000
    num_test: int = 300
    data_seed: int = 0
    train_seed: int = 42
    cutoff_len: int = 96
    max_grad_norm: float = 1.0
    threads: int = 1
    bf16: bool = False  # on a GPU: train in bfloat16 (the CPU runs of docs/quality.md are float32)


@dataclass(frozen=True)
class Method:
    """One row of the table: a fine-tuning type, its YAML keys and the learning rates swept."""

    label: str
    finetuning_type: str
    lrs: tuple[float, ...]
    args: dict[str, Any] = field(default_factory=dict)
    note: str = ""


# LoSiA in this harness: the paper's p = p_o = 1/8; T = 3 so that all 31 groups of SmolLM2 (30 decoder layers and
# lm_head) reselect once within 100 steps. The knobs each ablation changes are listed next to it.
LOSIA = {"losia_rank_factor": 0.125, "losia_output_rank_factor": 0.125, "losia_time_slot": 3}
LOSIA_LRS = (5e-4, 1e-3, 2e-3)

METHODS: dict[str, Method] = {
    "losia_pro": Method("LoSiA-Pro", "losia", LOSIA_LRS, dict(LOSIA)),
    "losia_plain": Method("LoSiA (plain path)", "losia", LOSIA_LRS[1:2], {**LOSIA, "losia_pro": False}),
    "lora_r8": Method("LoRA r=8", "lora", (5e-4, 1e-3, 2e-3, 4e-3), {"lora_rank": 8, "lora_alpha": 16}),
    "lora_r64": Method("LoRA r=64", "lora", (2e-4, 5e-4, 1e-3), {"lora_rank": 64, "lora_alpha": 128}),
    "full": Method("Full fine-tuning", "full", (2e-5, 5e-5, 1e-4, 2e-4)),
    # Table 3 ablations, at LoSiA's settings otherwise.
    "losia_sync": Method("LoSiA SL (sync)", "losia", LOSIA_LRS, {**LOSIA, "losia_mode": "sync"}),
    "losia_once": Method("LoSiA ReLO (localize once)", "losia", LOSIA_LRS, {**LOSIA, "losia_mode": "once"}),
    "losia_fixed": Method("LoSiA random fixed subnets", "losia", LOSIA_LRS, {**LOSIA, "losia_mode": "fixed"}),
    "losia_no_rewarm": Method("LoSiA WDS (no rewarm)", "losia", LOSIA_LRS, {**LOSIA, "losia_rewarm": False}),
    "losia_gl": Method("LoSiA GL (|G| importance)", "losia", LOSIA_LRS, {**LOSIA, "losia_importance": "gradient"}),
    "losia_ffto": Method(
        "LoSiA FFTO (p_o = 1, dense lm_head)", "losia", LOSIA_LRS, {**LOSIA, "losia_output_rank_factor": 1.0}
    ),
    "losia_reset_state": Method(
        "LoSiA, Adam step restarted at reselection", "losia", LOSIA_LRS, {**LOSIA, "losia_adam_reset": "state"}
    ),
    "losia_output_last": Method(
        "LoSiA, lm_head measured last", "losia", LOSIA_LRS, {**LOSIA, "losia_output_order": "last"}
    ),
    "losia_eps6": Method("LoSiA, Adam eps 1e-6", "losia", LOSIA_LRS, {**LOSIA, "adam_epsilon": 1e-6}),
    "losia_frozen_output": Method(
        "LoSiA, lm_head frozen (p_o = 0)", "losia", LOSIA_LRS, {**LOSIA, "losia_output_rank_factor": 0.0}
    ),
    "losia_p4": Method("LoSiA, p = 1/4", "losia", LOSIA_LRS, {**LOSIA, "losia_rank_factor": 0.25}),
    "losia_p4_frozen_output": Method(
        "LoSiA, p = 1/4, lm_head frozen",
        "losia",
        LOSIA_LRS,
        {**LOSIA, "losia_rank_factor": 0.25, "losia_output_rank_factor": 0.0},
    ),
    "losia_t1": Method("LoSiA, T = 1 (3 reselections per group)", "losia", LOSIA_LRS, {**LOSIA, "losia_time_slot": 1}),
}

SUITES = {
    "core": ("losia_pro", "lora_r8", "lora_r64", "full", "losia_plain"),
    "ablations": (
        "losia_sync",
        "losia_once",
        "losia_fixed",
        "losia_no_rewarm",
        "losia_gl",
        "losia_ffto",
        "losia_reset_state",
        "losia_output_last",
        "losia_eps6",
        "losia_frozen_output",
        "losia_p4",
        "losia_p4_frozen_output",
        "losia_t1",
    ),
}
SUITES["all"] = SUITES["core"] + SUITES["ablations"]


def run_key(method_id: str, lr: float) -> str:
    """The name of a run: ``<method id>@<lr>``."""
    return f"{method_id}@{lr:g}"


class Harness:
    """Prepares the model and data under ``work_dir`` and runs, scores and records training runs."""

    def __init__(self, work_dir: str | Path, settings: Settings | None = None, keep_weights: bool = False) -> None:
        self.work = Path(work_dir).resolve()
        self.settings = settings or Settings()
        self.keep_weights = keep_weights
        self.results_path = self.work / "results.json"
        self.results: dict[str, Any] = self._load_results()

    # -- preparation ----------------------------------------------------------------------------------------------

    @property
    def model_dir(self) -> Path:
        return self.work / "model"

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    def prepare(self) -> None:
        """Build the model (once), write the task files and the general-prompt reference, score the base model."""
        from .model import build_model

        build_model(self.model_dir, self.work / "cache")
        train, test = make_splits(self.settings.num_train, self.settings.num_test, self.settings.data_seed)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.data_dir / f"{DATASET}.json", [_alpaca(item) for item in train])
        _write_json(self.data_dir / "test.json", test)
        _write_json(self.data_dir / "dataset_info.json", {DATASET: {"file_name": f"{DATASET}.json"}})
        if "base" not in self.results:
            print("[quality] scoring the base model", flush=True)
            self._record(
                "base", {"method": "base", "label": "Base model (no training)", "lr": None, **self._score(None)}
            )

    def general_reference(self, model, tokenizer) -> list[dict[str, str]]:
        """The base model's greedy answers to the general prompts (computed once, cached)."""
        from .evaluate import chat_prompt, generate

        path = self.data_dir / "general_reference.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        answers = generate(model, tokenizer, [chat_prompt(p) for p in GENERAL_PROMPTS], max_new_tokens=48)
        reference = [{"prompt": p, "answer": a} for p, a in zip(GENERAL_PROMPTS, answers)]
        _write_json(path, reference)
        return reference

    # -- runs -----------------------------------------------------------------------------------------------------

    def yaml_for(self, method: Method, lr: float, output_dir: Path) -> dict[str, Any]:
        s = self.settings
        config: dict[str, Any] = {
            "model_name_or_path": str(self.model_dir),
            "stage": "sft",
            "do_train": True,
            "finetuning_type": method.finetuning_type,
            "dataset": DATASET,
            "dataset_dir": str(self.data_dir),
            "template": TEMPLATE,
            "cutoff_len": s.cutoff_len,
            "overwrite_cache": True,
            "preprocessing_num_workers": 1,
            "dataloader_num_workers": 0,
            "output_dir": str(output_dir),
            "overwrite_output_dir": True,
            "logging_steps": min(5, s.steps),
            "save_strategy": "no",
            "save_only_model": True,
            "report_to": "none",
            "per_device_train_batch_size": s.batch_size,
            "gradient_accumulation_steps": 1,
            "learning_rate": lr,
            "max_steps": s.steps,
            "lr_scheduler_type": "cosine",
            "warmup_steps": s.warmup_steps,
            "max_grad_norm": s.max_grad_norm,
            "bf16": s.bf16,
            "fp16": False,
            # Short sequences of a small model: activations are small, so recomputing them would only cost time.
            "disable_gradient_checkpointing": True,
            "seed": s.train_seed,
        }
        if method.finetuning_type == "lora":
            config.update({"lora_target": "all", "lora_dropout": 0.0})
        config.update(method.args)
        return config

    def run(self, method_id: str, lr: float) -> dict[str, Any]:
        """Train, score and record one run (returns the recorded entry; a recorded run is not repeated)."""
        key = run_key(method_id, lr)
        if key in self.results:
            return self.results[key]
        method = METHODS[method_id]
        run_dir = self.work / "runs" / key
        output_dir = run_dir / "output"
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "train.yaml"
        _write_json(config_path, self.yaml_for(method, lr, output_dir))  # JSON is valid YAML
        threads = str(self.settings.threads)
        env = dict(
            os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads
        )
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        cli = shutil.which("llamafactory-cli", path=env["PATH"]) or "llamafactory-cli"
        print(f"[quality] {key}: training ({self.settings.steps} steps) -> {run_dir}", flush=True)
        start = time.perf_counter()
        with open(run_dir / "train.log", "w", encoding="utf-8") as log:
            code = subprocess.call([cli, "train", str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - start
        if code != 0:
            tail = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
            raise RuntimeError(f"{key}: llamafactory-cli train exited with {code}; last lines:\n" + "\n".join(tail))
        train = _train_figures(output_dir)
        print(f"[quality] {key}: scoring", flush=True)
        scores = self._score(output_dir if method.finetuning_type != "lora" else None, adapter=output_dir)
        entry = {"method": method_id, "label": method.label, "lr": lr, **train, "wall_s": wall, **scores}
        self._record(key, entry)
        if not self.keep_weights:
            for weights in output_dir.glob("*.safetensors"):
                weights.unlink()
        print(
            f"[quality] {key}: accuracy {entry['accuracy']:.1f}%, answer NLL {entry['answer_nll']:.3f}, "
            f"forgetting {entry['forgetting']:+.3f}, train loss {entry['final_loss']:.3f}, {entry['train_s']:.0f} s",
            flush=True,
        )
        return entry

    def run_all(self, pairs: list[tuple[str, float]], jobs: int = 1) -> None:
        """Run (method, lr) pairs, ``jobs`` at a time (each a process with ``settings.threads`` threads)."""
        todo = [(m, lr) for m, lr in pairs if run_key(m, lr) not in self.results]
        if jobs <= 1 or len(todo) <= 1:
            for method_id, lr in todo:
                self.run(method_id, lr)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [pool.submit(_run_in_worker, str(self.work), asdict(self.settings), m, lr) for m, lr in todo]
            for future in futures:
                future.result()  # re-raises a worker's error
        self.results.update(self._load_results())

    # -- scoring --------------------------------------------------------------------------------------------------

    def _score(self, model_dir: Path | None, adapter: Path | None = None) -> dict[str, Any]:
        import torch

        from .evaluate import general_nll, load_for_eval, task_scores

        torch.set_num_threads(self.settings.threads)
        if model_dir is None and adapter is not None:
            model, tokenizer = load_for_eval(str(self.model_dir), str(adapter))
        else:
            model, tokenizer = load_for_eval(str(model_dir or self.model_dir))
        if model_dir is None and adapter is None:  # the base model: it defines the general-prompt reference
            reference = self.general_reference(model, tokenizer)
        else:
            reference = json.loads((self.data_dir / "general_reference.json").read_text(encoding="utf-8"))
        test = json.loads((self.data_dir / "test.json").read_text(encoding="utf-8"))
        start = time.perf_counter()
        scores = task_scores(model, tokenizer, test)
        scores["general_nll"] = general_nll(model, tokenizer, reference)
        base = self.results.get("base")
        scores["forgetting"] = scores["general_nll"] - (base["general_nll"] if base else scores["general_nll"])
        scores["eval_s"] = time.perf_counter() - start
        return scores

    # -- records --------------------------------------------------------------------------------------------------

    def _load_results(self) -> dict[str, Any]:
        if not self.results_path.exists():
            return {}
        data = json.loads(self.results_path.read_text(encoding="utf-8"))
        if data.get("settings") != asdict(self.settings):
            raise ValueError(
                f"{self.results_path} holds runs made with other settings ({data.get('settings')}); use another "
                "--work folder or delete the file to start over."
            )
        return data["runs"]

    def _record(self, key: str, entry: dict[str, Any]) -> None:
        import fcntl

        self.work.mkdir(parents=True, exist_ok=True)
        # Several harness processes may share one work folder (--jobs): read, add and write under a lock.
        with open(self.work / "results.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.results.update(self._load_results())
            self.results[key] = entry
            _write_json(self.results_path, {"settings": asdict(self.settings), "runs": self.results})


def _run_in_worker(work: str, settings: dict[str, Any], method_id: str, lr: float) -> None:
    Harness(work, Settings(**settings)).run(method_id, lr)


def machine_description() -> str:
    """Processor, cores and torch build, for the report header."""
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def _alpaca(item: dict[str, str]) -> dict[str, str]:
    return {"instruction": item["instruction"], "input": item["input"], "output": item["output"]}


def _train_figures(output_dir: Path) -> dict[str, float]:
    """Mean loss over the last fifth of the logged steps, and the trainer's own runtime (no start-up)."""
    results = json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))
    logs = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines() if line]
    losses = [log["loss"] for log in logs if "loss" in log]
    tail = losses[-max(1, len(losses) // 5) :]
    return {"final_loss": sum(tail) / len(tail), "train_s": float(results["train_runtime"])}


def _write_json(path: Path, data: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
