"""Fixtures for the LLaMA-Factory integration: tiny offline assets and a llamafactory-cli runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("llamafactory")

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A tiny LLaMA (hidden 64, 2 layers) with its tokenizer, and the demo datasets, built offline."""
    return build_test_assets(tmp_path_factory.mktemp("assets"))


def build_test_assets(root: Path) -> dict[str, Path]:
    """The tiny LLaMA and the demo datasets under ``root``, plus ``demo_pairs`` (a ranking dataset for rm / dpo)."""
    from losia_factory.demo import build_assets

    paths = build_assets(root, hidden_size=64, num_layers=2, intermediate_size=128)
    records = json.loads((paths["data"] / "demo_arithmetic.json").read_text())
    pairs = [
        {"instruction": r["instruction"], "input": r["input"], "chosen": r["output"], "rejected": r["output"][::-1]}
        for r in records[:64]
    ]
    (paths["data"] / "demo_pairs.json").write_text(json.dumps(pairs))
    info = json.loads((paths["data"] / "dataset_info.json").read_text())
    info["demo_pairs"] = {
        "file_name": "demo_pairs.json",
        "ranking": True,
        "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
    }
    (paths["data"] / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return paths


def train_config(assets: dict[str, Path], output_dir: Path, **overrides) -> dict:
    config = {
        "model_name_or_path": str(assets["model"]),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "losia",
        "losia_rank_factor": 0.25,
        "losia_time_slot": 2,
        "losia_output_rank_factor": 0.125,
        "dataset": "demo_arithmetic",
        "dataset_dir": str(assets["data"]),
        "template": "chatml",
        "cutoff_len": 64,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "logging_steps": 1,
        "save_steps": 3,
        "max_steps": 8,
        "report_to": "none",
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 5.0e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "bf16": False,
        "fp16": False,
        "seed": 7,
    }
    config.update(overrides)
    return config


def _cli(command: str, config: dict, workdir: Path, env: dict | None) -> tuple[list[str], dict]:
    """The ``llamafactory-cli <command> <yaml>`` argv (the YAML written into ``workdir``) and its environment."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{command}-{len(list(workdir.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    full_env.pop("LOSIA_FACTORY_DISABLE", None)
    return [str(VENV_BIN / "llamafactory-cli"), command, str(path)], full_env


def run_cli(
    command: str, config: dict, workdir: Path, env: dict | None = None, stdin: str | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``llamafactory-cli <command> <yaml>`` from the test environment's venv; returns the finished process."""
    argv, full_env = _cli(command, config, workdir, env)
    return subprocess.run(
        argv, cwd=workdir, env=full_env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def start_cli(command: str, config: dict, workdir: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``llamafactory-cli <command> <yaml>`` in its own process group (to be killed whole); output to ``log``."""
    argv, full_env = _cli(command, config, workdir, env)
    with open(log, "w") as handle:
        return subprocess.Popen(
            argv, cwd=workdir, env=full_env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        raise AssertionError(
            f"llamafactory-cli failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )


# A rare abort while the interpreter shuts down after `llamafactory-cli chat` has answered and read `exit` (a C++
# thread still joinable at exit; seen once in ~10 runs under CPU load, in stock LLaMA-Factory code paths).
SHUTDOWN_ABORT = "terminate called without an active exception"


def assert_chat_ok(result: subprocess.CompletedProcess) -> None:
    """Like :func:`assert_ok` for ``chat``; tolerates only the shutdown abort, after a complete answer."""
    answered = "Assistant:" in result.stdout and result.stdout.rstrip().endswith("User:")
    if result.returncode == -6 and answered and result.stderr.rstrip().endswith(SHUTDOWN_ABORT):
        return
    assert_ok(result)


# -- the reference runs of the distributed and kill tests (shared: each costs a llamafactory-cli launch) ----------

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "deepspeed"
TWO = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}
# For resumed multi-process runs on CPU only: see the shim's docstring (an upstream limitation, full fine-tuning too).
CPU_RESUME_SHIM = {"PYTHONPATH": str(Path(__file__).parent / "cpu_resume_shim")}
# For FSDP on CPU only: accelerate 1.11 drops the FSDP plugin on CPU processes (see the shim's docstring).
CPU_FSDP_SHIM = {"PYTHONPATH": str(Path(__file__).parent / "cpu_fsdp_shim")}
# FSDP2 (fully_shard) through the Trainer's arguments, one shard group per decoder layer and the root.
FSDP2 = {
    "fsdp": "full_shard auto_wrap",
    "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]},
}
DISTRIBUTED_LR = 1e-3


def distributed_config(assets, out: Path, launch: str, pro: bool, **overrides) -> dict:
    """Global batch 8: 1 process x 4 x accumulation 2 ("single"), or 2 processes x 2 x accumulation 2 ("ddp",
    "zero2", "zero3", "fsdp"). T=2 with 3 groups, 8 steps: four reselections; checkpoint-3 falls inside a measuring
    window."""
    settings = dict(
        max_steps=8,
        save_steps=3,
        learning_rate=DISTRIBUTED_LR,
        losia_time_slot=2,
        gradient_accumulation_steps=2,
        losia_pro=pro,
    )
    if launch == "single":
        settings["per_device_train_batch_size"] = 4
    else:
        settings.update(per_device_train_batch_size=2, ddp_backend="gloo")
    if launch == "zero2":
        settings["deepspeed"] = str(RECIPES / "ds_z2_config.json")
    if launch == "zero3":
        settings["deepspeed"] = str(zero3_cpu_config(out.parent))
    if launch == "fsdp":
        settings.update(FSDP2)
    settings.update(overrides)
    return train_config(assets, out, **settings)


def zero3_cpu_config(folder: Path) -> Path:
    """recipes/deepspeed/ds_z3_config.json with every parameter partitioned, written into ``folder``.

    Persistent (never partitioned) small parameters are re-gathered by DeepSpeed after each checkpoint with several
    asynchronous all-gathers of which it waits for the last only; over gloo the others may still be running. A
    threshold of 0 keeps CPU runs clear of that, and makes every LoSiA block and norm weight a partitioned one.
    """
    config = json.loads((RECIPES / "ds_z3_config.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = folder / "ds_z3_cpu_config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def train_distributed(assets, root: Path, launch: str, pro: bool, **overrides) -> Path:
    suffix = "-bf16" if overrides.get("bf16") else "-resumed" if overrides else ""
    out = root / f"{launch}-{'pro' if pro else 'plain'}{suffix}"
    resumed = "resume_from_checkpoint" in overrides
    env = None if launch == "single" else {**TWO, **(CPU_RESUME_SHIM if resumed else {})}
    if (
        launch == "fsdp"
    ):  # its resumed runs need no other shim (the Trainer loads FSDP checkpoints without map_location)
        env = {**TWO, **CPU_FSDP_SHIM}
    result = run_cli("train", distributed_config(assets, out, launch, pro, **overrides), root, env=env)
    assert_ok(result)
    if launch != "single":
        assert "Initializing 2 distributed tasks" in result.stdout + result.stderr
    return out


@pytest.fixture(scope="session")
def losia_references(assets, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted LoSiA-Pro and plain LoSiA runs on 1 process and on 2 (DDP), keyed "single-pro", "ddp-plain"..."""
    root = tmp_path_factory.mktemp("references")
    return {
        f"{launch}-{'pro' if pro else 'plain'}": train_distributed(assets, root, launch, pro)
        for pro in (True, False)
        for launch in ("single", "ddp")
    }
