"""llamafactory-cli train on 2 processes (DDP over gloo, DeepSpeed ZeRO-2) equals 1 process with the same global batch.

Global batch 8 in every run: 1 process x 4 x accumulation 2, or 2 processes x 2 x accumulation 2. T=2 with 3 groups,
8 steps: four reselections; checkpoint-3 falls inside a measuring window (importance buffers in the checkpoint).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.llamafactory.conftest import assert_ok, run_cli, train_config
from tests.llamafactory.test_cli import max_diff, weights

pytestmark = pytest.mark.slow

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "deepspeed"
TWO = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"}
# For resumed multi-process runs on CPU only: see the shim's docstring (an upstream limitation, full fine-tuning too).
CPU_RESUME_SHIM = {"PYTHONPATH": str(Path(__file__).parent / "cpu_resume_shim")}
LR = 1e-3
# Another subnet would move the weights by ~lr; reduction-order noise of fp32 Adam stays far below.
TOLERANCE = 1e-4


def config(assets, out: Path, launch: str, pro: bool, **overrides) -> dict:
    settings = dict(
        max_steps=8, save_steps=3, learning_rate=LR, losia_time_slot=2, gradient_accumulation_steps=2, losia_pro=pro
    )
    if launch == "single":
        settings["per_device_train_batch_size"] = 4
    else:
        settings.update(per_device_train_batch_size=2, ddp_backend="gloo")
    if launch == "zero2":
        settings["deepspeed"] = str(RECIPES / "ds_z2_config.json")
    settings.update(overrides)
    return train_config(assets, out, **settings)


def train(assets, root: Path, launch: str, pro: bool, **overrides) -> Path:
    suffix = "-bf16" if overrides.get("bf16") else "-resumed" if overrides else ""
    out = root / f"{launch}-{'pro' if pro else 'plain'}{suffix}"
    resumed = "resume_from_checkpoint" in overrides
    env = None if launch == "single" else {**TWO, **(CPU_RESUME_SHIM if resumed else {})}
    result = run_cli("train", config(assets, out, launch, pro, **overrides), root, env=env)
    assert_ok(result)
    if launch != "single":
        assert "Initializing 2 distributed tasks" in result.stdout + result.stderr
    return out


def reselections(out: Path) -> list[tuple[int, list[str]]]:
    lines = [json.loads(line) for line in (out / "losia_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["groups"]) for r in lines if r.get("event") == "reselect"]


@pytest.fixture(scope="module")
def runs(assets, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    found = {}
    for pro in (True, False):
        for launch in ("single", "ddp", "zero2"):
            found[f"{launch}-{'pro' if pro else 'plain'}"] = train(assets, root, launch, pro)
    for launch in ("single", "zero2"):  # bf16 autocast (CPU): DeepSpeed's bf16 path with its fp32 masters
        found[f"{launch}-bf16"] = train(assets, root, launch, True, bf16=True, use_cpu=True)
    for launch in ("ddp", "zero2"):
        checkpoint = root / f"{launch}-checkpoint-3"  # as left on disk by a run killed after its third step
        shutil.copytree(found[f"{launch}-pro"] / "checkpoint-3", checkpoint)
        found[f"{launch}-resumed"] = train(assets, root, launch, True, resume_from_checkpoint=str(checkpoint))
    return found


@pytest.mark.parametrize("launch", ["ddp", "zero2"])
@pytest.mark.parametrize("path", ["pro", "plain"])
def test_two_processes_equal_one_process(runs, launch, path):
    single, multi = runs[f"single-{path}"], runs[f"{launch}-{path}"]
    assert reselections(multi) == reselections(single) and len(reselections(single)) == 4
    diff = max_diff(weights(single), weights(multi))
    print(f"{launch} {path}: max |W - W_1proc| = {diff:.3g}")
    assert diff < TOLERANCE
    assert max_diff(weights(single), weights(single.parent / f"single-{path}" / "checkpoint-3")) > 10 * TOLERANCE


def test_zero2_checkpoint_is_a_deepspeed_checkpoint(runs):
    checkpoint = runs["zero2-pro"] / "checkpoint-3"
    assert (checkpoint / "global_step3").is_dir() and not (checkpoint / "optimizer.pt").exists()


@pytest.mark.parametrize("launch", ["ddp", "zero2"])
def test_resume_equals_uninterrupted(runs, launch):
    diff = max_diff(weights(runs[f"{launch}-pro"]), weights(runs[f"{launch}-resumed"]))
    print(f"{launch} resume: max |W_resumed - W_uninterrupted| = {diff:.3g}")
    assert diff == 0.0


def test_zero2_in_bf16_stays_as_close_as_full_fine_tuning_does(runs):
    """bf16 rounding differs with the batch split, and Adam turns it into differences of up to ~lr on tiny gradients:
    stock full fine-tuning of this model (8 steps, lr 1e-3, bf16) ends 3.6e-3 (DDP) and 4.5e-3 (ZeRO-2) away from one
    process. LoSiA must stay within that, with the same reselections and no disagreement between ranks."""
    single, zero2 = runs["single-bf16"], runs["zero2-bf16"]
    assert reselections(zero2) == reselections(single)
    diff = max_diff(weights(single), weights(zero2))
    print(f"zero2 bf16: max |W - W_1proc| = {diff:.3g}")
    assert diff < 5 * LR
