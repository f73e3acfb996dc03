"""kill -9 through llamafactory-cli, then ``resume_from_checkpoint: true``: the result equals an uninterrupted run, for
LoSiA-Pro, plain LoSiA and PiLoRA, on one process and on two (DDP); PiLoRA on two processes equals one.

Each killed run trains with the settings of its reference (8 steps, a checkpoint every 3). Once checkpoint-3 is
complete, every forward/backward pass sleeps (``slow_steps_shim``), and the run is killed (SIGKILL to its whole process
tree: llamafactory-cli, torchrun and the workers) as soon as the trainer log reports step 4, i.e. during step 5, or
while checkpoint-6 is being written. LoSiA measures importance on every step (T=2, one group per slot), so the kill
lands inside a measuring window, and checkpoint-3 holds half-filled importance buffers; the PiLoRA kill lands after
its stage switch (step 4), so resuming from checkpoint-3 crosses it. Before resuming, a half-written ``checkpoint-7``
(what a kill during a save leaves) is put next to the real ones: the resumed run must skip it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.llamafactory.conftest import (
    CPU_RESUME_SHIM,
    TWO,
    assert_ok,
    distributed_config,
    run_cli,
    start_cli,
)
from tests.llamafactory.test_cli import max_diff
from tests.llamafactory.test_pilora_cli import pilora_config

pytestmark = pytest.mark.slow

SLOW_STEPS = {
    "PYTHONPATH": str(Path(__file__).parent / "slow_steps_shim"),
    "LOSIA_TEST_STEP_DELAY": "0.4",
    "LOSIA_TEST_DELAY_FROM": "3",
}
KILL_AFTER_STEP = 4
KILL_TIMEOUT = 300  # seconds for the killed run to reach the kill moment (start-up included)
PILORA_PROBE = 4
# PiLoRA on 2 processes vs 1: fp32 reduction-order noise, amplified by Adam on small gradients; a different mask or a
# missed step would move the adapters by ~lr (5e-3) and more.
PILORA_TOLERANCE = 1e-4


def config(assets, out: Path, method: str, launch: str, **overrides) -> dict:
    if method in ("pro", "plain"):
        return distributed_config(assets, out, launch, method == "pro", **overrides)
    settings = dict(max_steps=8, save_steps=3, pilora_probe_steps=PILORA_PROBE, gradient_accumulation_steps=2)
    if launch == "single":
        settings["per_device_train_batch_size"] = 4
    else:
        settings.update(per_device_train_batch_size=2, ddp_backend="gloo")
    settings.update(overrides)
    return pilora_config(assets, out, **settings)


def final_weights(method: str, out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / ("adapter_model.safetensors" if method == "pilora" else "model.safetensors")))


def logged_step(out: Path) -> int:
    """The latest optimizer step LLaMA-Factory's trainer log reports (0 before the first)."""
    try:
        lines = (out / "trainer_log.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line).get("current_steps", 0) for line in lines if line.strip().endswith("}")]
    return max(steps, default=0)


def kill_tree(process) -> None:
    """SIGKILL ``process`` and every process below it, all at once, as a crashed machine would stop them.

    Killing the process group is not enough: torchrun starts each worker in a session of its own.
    """
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for member in [psutil.Process(process.pid), *descendants] if process.poll() is None else descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    process.wait(timeout=60)  # reaped by Popen itself, which keeps its return code
    _, alive = psutil.wait_procs(descendants, timeout=60)
    assert not alive, alive


def kill_during_training(process, out: Path, method: str, log: Path) -> int:
    """Wait (bounded) for a complete checkpoint-3 and the logged step KILL_AFTER_STEP, then SIGKILL the group."""
    marker = out / "checkpoint-3" / ("pilora_state.safetensors" if method == "pilora" else "losia_config.json")
    deadline = time.monotonic() + KILL_TIMEOUT
    while not ((out / "checkpoint-3" / "trainer_state.json").exists() and marker.exists()):
        if process.poll() is not None or time.monotonic() > deadline:
            kill_tree(process)
            pytest.fail(f"no checkpoint-3 before the run ended or {KILL_TIMEOUT} s passed:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    while (step := logged_step(out)) < KILL_AFTER_STEP:
        if process.poll() is not None or time.monotonic() > deadline:
            kill_tree(process)
            pytest.fail(f"the run ended before step {KILL_AFTER_STEP} could be seen:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    kill_tree(process)
    assert process.returncode == -signal.SIGKILL
    return step


def fake_interrupted_save(out: Path) -> None:
    """checkpoint-7 as a kill during its save leaves it: model and optimizer files, no trainer_state.json."""
    newest = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.copytree(newest, out / "checkpoint-7")
    (out / "checkpoint-7" / "trainer_state.json").unlink(missing_ok=True)
    optimizer = out / "checkpoint-7" / "optimizer.pt"
    if optimizer.exists():
        optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])  # cut off mid-write


@pytest.fixture(scope="module")
def pilora_references(assets, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pilora-references")
    found = {}
    for launch in ("single", "ddp"):
        out = root / f"{launch}-pilora"
        result = run_cli("train", config(assets, out, "pilora", launch), root, env=None if launch == "single" else TWO)
        assert_ok(result)
        found[f"{launch}-pilora"] = out
    return found


@pytest.fixture
def reference(request, method, launch) -> Path:
    """The uninterrupted run of ``method`` on ``launch`` (only the references a selected test needs are trained)."""
    found = request.getfixturevalue("pilora_references" if method == "pilora" else "losia_references")
    return found[f"{launch}-{method}"]


@pytest.mark.parametrize("launch", ["single", "ddp"])
@pytest.mark.parametrize("method", ["pro", "plain", "pilora"])
def test_killed_run_resumes_to_the_uninterrupted_result(assets, tmp_path, reference, method, launch):
    out = tmp_path / "out"
    log = tmp_path / "killed.log"
    env = SLOW_STEPS if launch == "single" else {**TWO, **SLOW_STEPS}
    process = start_cli("train", config(assets, out, method, launch), tmp_path, log, env=env)
    killed_after = kill_during_training(process, out, method, log)

    # The kill landed after a complete checkpoint and before the end...
    assert KILL_AFTER_STEP <= killed_after < 8
    assert not (out / "checkpoint-8").exists()
    assert not (out / "model.safetensors").exists() and not (out / "adapter_model.safetensors").exists()
    if method != "pilora":  # ... and inside a measuring window
        records = [json.loads(line) for line in (out / "losia_log.jsonl").read_text().splitlines()]
        last = [r for r in records if "measuring" in r][-1]
        assert last["step"] >= KILL_AFTER_STEP and last["measuring"], last
    fake_interrupted_save(out)

    overrides = dict(resume_from_checkpoint=True, overwrite_output_dir=False)
    env = None if launch == "single" else {**TWO, **CPU_RESUME_SHIM}
    result = run_cli("train", config(assets, out, method, launch, **overrides), tmp_path, env=env)
    assert_ok(result)
    output = result.stdout + result.stderr
    assert "Skipping incomplete checkpoints" in output and "checkpoint-7: trainer_state.json is missing" in output
    diff = max_diff(final_weights(method, reference), final_weights(method, out))
    print(f"{method} {launch}, killed after step {killed_after}: max |W_resumed - W_uninterrupted| = {diff:.3g}")
    assert diff == 0.0


def test_pilora_on_two_processes_equals_one_process(pilora_references):
    single, ddp = pilora_references["single-pilora"], pilora_references["ddp-pilora"]
    masks_single = load_file(str(single / "pilora_masks.safetensors"))
    masks_ddp = load_file(str(ddp / "pilora_masks.safetensors"))
    assert sorted(masks_single) == sorted(masks_ddp)
    assert all(torch.equal(masks_single[k], masks_ddp[k]) for k in masks_single if k.endswith((".mask", ".hits")))
    diff = max_diff(final_weights("pilora", single), final_weights("pilora", ddp))
    print(f"pilora ddp: max |W - W_1proc| = {diff:.3g}")
    assert diff < PILORA_TOLERANCE
    assert json.loads((ddp / "pilora_partition.json").read_text())["switch_step"] == PILORA_PROBE
