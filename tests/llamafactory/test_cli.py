"""End to end through the real ``llamafactory-cli`` on a tiny offline LLaMA (each launch costs ~5-10 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from losia_factory.core import subnet_size
from tests.llamafactory.conftest import assert_chat_ok, assert_ok, run_cli, train_config
from tests.toy_models import LLAMA_PROJECTIONS

pytestmark = pytest.mark.slow

TARGETS = LLAMA_PROJECTIONS


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def target_names() -> list[str]:
    return [f"model.layers.{i}.{t}.weight" for i in range(2) for t in TARGETS] + ["lm_head.weight"]


def max_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(assets, tmp_path_factory):
    """Three trainings of 8 steps (T=2, so every group reselects): LoSiA-Pro with accumulation 2 and gradient
    checkpointing (a checkpoint every step); the plain path with one batch of 8 and no checkpointing; and a fresh
    process resuming the first run from its step-3 checkpoint."""
    root = tmp_path_factory.mktemp("cli")
    pro = root / "pro"
    result = run_cli("train", train_config(assets, pro, save_steps=1), root)
    assert_ok(result)
    plain = root / "plain"
    assert_ok(
        run_cli(
            "train",
            train_config(
                assets,
                plain,
                losia_pro=False,
                per_device_train_batch_size=8,
                gradient_accumulation_steps=1,
                disable_gradient_checkpointing=True,
            ),
            root,
        )
    )
    resumed = root / "resumed"
    assert_ok(run_cli("train", train_config(assets, resumed, resume_from_checkpoint=str(pro / "checkpoint-3")), root))
    return {"root": root, "pro": pro, "plain": plain, "resumed": resumed, "pro_log": result.stdout + result.stderr}


def test_loss_falls_and_lora_free_output(runs):
    losses = [
        json.loads(line)["loss"]
        for line in (runs["pro"] / "trainer_log.jsonl").read_text().splitlines()
        if json.loads(line).get("loss") is not None
    ]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.2
    assert "Fine-tuning method: LoSiA-Pro" in runs["pro_log"]
    for name in ("model.safetensors", "tokenizer.json", "config.json", "losia_config.json", "losia_log.jsonl"):
        assert (runs["pro"] / name).exists(), name
    assert not list(runs["pro"].glob("adapter_*"))


def test_only_target_weights_changed(runs, assets):
    base, trained = weights(assets["model"]), weights(runs["pro"])
    assert sorted(base) == sorted(trained)
    for name in base:
        changed = not torch.equal(base[name], trained[name])
        assert changed == (name in target_names()), name


def test_changed_entries_form_one_block_per_window(runs, assets):
    """After the first step (no reselection yet) each target changed exactly one floor(p*out) x floor(p*in) block."""
    base, first = weights(assets["model"]), weights(runs["pro"] / "checkpoint-1")
    for name in target_names():
        changed = base[name] != first[name]
        out_f, in_f = base[name].shape
        rows = changed.any(dim=1).nonzero().squeeze(1)
        cols = changed.any(dim=0).nonzero().squeeze(1)
        if name == "lm_head.weight":
            assert (rows.numel(), cols.numel()) == (subnet_size(out_f, 0.125), in_f), name
        else:
            assert (rows.numel(), cols.numel()) == (subnet_size(out_f, 0.25), subnet_size(in_f, 0.25)), name
        assert int(changed.sum()) == rows.numel() * cols.numel(), name  # the whole block, nothing outside


def test_pro_with_accumulation_and_checkpointing_equals_plain_full_batch(runs):
    assert max_diff(weights(runs["pro"]), weights(runs["plain"])) < 1e-5


def test_resume_from_checkpoint_equals_uninterrupted(runs):
    state = torch.load(runs["pro"] / "checkpoint-3" / "optimizer.pt", weights_only=True)
    assert state["losia"]["step"] == 3 and state["losia"]["importance"], "checkpoint inside a measuring window"
    assert (runs["pro"] / "checkpoint-3" / "losia_config.json").exists()
    assert max_diff(weights(runs["pro"]), weights(runs["resumed"])) == 0.0


def test_per_group_learning_rates_show_rewarm(runs):
    records = [json.loads(line) for line in (runs["pro"] / "losia_log.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    reselections = [(r["step"], g) for r in records if r.get("event") == "reselect" for g in r["groups"]]
    assert [s for s, _ in reselections] == [2, 4, 6, 8]
    for step, group in reselections[:-1]:
        assert lrs[step + 1][group] == 0.0  # r = 0 on the first step after reselection (Eq. 8)
        others = [v for g, v in lrs[step + 1].items() if g != group]
        assert all(v > 0 for v in others)
        assert lrs[step + 2][group] == pytest.approx(0.5 * lrs[step + 2]["extra"])  # r / T = 1/2
    state = json.loads((runs["pro"] / "trainer_state.json").read_text())
    assert any("losia_lr_min" in entry for entry in state["log_history"])


def test_saved_model_loads_with_plain_transformers(runs):
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(runs["pro"])!r})
        assert "losia_factory" not in sys.modules
        assert not any("losia" in n for n in model.state_dict())
        logits = model(torch.tensor([[1, 2, 3]])).logits
        assert torch.isfinite(logits).all()
        print("ok")
    """)
    env = {**os.environ, "LOSIA_FACTORY_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_export_and_chat(runs):
    root = runs["root"]
    exported = root / "exported"
    assert_ok(
        run_cli(
            "export",
            {
                "model_name_or_path": str(runs["pro"]),
                "finetuning_type": "losia",
                "template": "chatml",
                "export_dir": str(exported),
                "export_device": "cpu",
            },
            root,
        )
    )
    assert max_diff(weights(runs["pro"]), weights(exported)) == 0.0
    result = run_cli(
        "chat",
        {
            "model_name_or_path": str(exported),
            "finetuning_type": "losia",
            "template": "chatml",
            "max_new_tokens": 8,
            "do_sample": False,
        },
        root,
        stdin="What is 2 plus 3?\nexit\n",
        timeout=300,
    )
    assert_chat_ok(result)
    assert "Assistant:" in result.stdout


def test_analyze_and_delta_of_the_trained_run(runs, assets, tmp_path):
    """`losia-factory analyze` draws every figure of a real run (the base found from the run's own record) and the
    recorded subnets explain every changed entry; `delta export/apply` rebuilds the run's weights bit for bit."""
    from losia_factory.analysis import load_run
    from losia_factory.analysis.report import FILES
    from losia_factory.cli import main

    out = tmp_path / "analysis"
    assert main(["analyze", str(runs["pro"]), "--out", str(out), "--top", "16"]) == 0
    assert all((out / file).stat().st_size > 1000 for file in FILES.values())
    results = json.loads((out / "analysis.json").read_text())
    assert results["base"] == str(assets["model"]) and results["skipped"] == {}
    figures = {name: entry["data"] for name, entry in results["figures"].items()}
    run = load_run(runs["pro"])
    assert sorted(run.targets) == sorted(name.removesuffix(".weight") for name in target_names())
    # Every entry that changed lies in a block the log recorded, and the blocks cover more than what changed.
    assert set(figures["coverage"]["outside_blocks"].values()) == {0}
    for name, changed in figures["coverage"]["changed"].items():
        assert 0 < changed <= figures["coverage"]["trained"][name], name
    assert [step for step, _ in figures["lr"]["reselections"]] == [2, 4, 6, 8]
    assert figures["subnets"]["steps"][0] == 0
    for row in figures["gradient"]["targets"].values():
        assert row["topk"] >= row["localized"] >= row["random"] - 1e-12
    # The run resumed from step 3 ends with the same subnets as the uninterrupted one.
    resumed = load_run(runs["resumed"])
    for name, target in run.targets.items():
        assert target.periods[-1].out_idx.tolist() == resumed.targets[name].periods[-1].out_idx.tolist(), name
    delta, merged = tmp_path / "delta", tmp_path / "merged"
    assert main(["delta", "export", str(runs["pro"]), "--base", str(assets["model"]), "--out", str(delta)]) == 0
    manifest = json.loads((delta / "delta.json").read_text())
    assert set(manifest["tensors"]) == set(target_names())
    assert manifest["sizes"]["delta_bytes"] < manifest["sizes"]["full_bytes"] / 2
    assert main(["delta", "apply", str(delta), "--base", str(assets["model"]), "--out", str(merged)]) == 0
    assert (merged / "model.safetensors").read_bytes() == (runs["pro"] / "model.safetensors").read_bytes()
    assert main(["delta", "apply", str(delta), "--base", str(runs["plain"]), "--out", str(tmp_path / "m2")]) == 1


def test_torchrun_single_process_pretraining_with_tensorboard(assets, tmp_path):
    out = tmp_path / "pt"
    config = train_config(
        assets, out, stage="pt", max_steps=4, save_steps=100, report_to="tensorboard", logging_dir=str(tmp_path / "tb")
    )
    result = run_cli("train", config, tmp_path, env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "1"})
    assert_ok(result)
    log = result.stdout + result.stderr
    assert "Initializing 1 distributed tasks" in log and "Fine-tuning method: LoSiA-Pro" in log
    assert (out / "model.safetensors").exists() and (out / "losia_log.jsonl").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "tb" / "losia").glob("events.out.tfevents*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"losia/lr/model.layers.0", "losia/lr/model.layers.1", "losia/lr/lm_head"} <= set(tags)


def test_bad_value_from_the_cli(assets, tmp_path):
    result = run_cli("train", train_config(assets, tmp_path / "bad", losia_rank_factor=1.5), tmp_path)
    assert result.returncode != 0
    assert "Invalid losia_rank_factor: losia_rank_factor must be a number in (0, 1], got 1.5" in result.stderr


@pytest.mark.parametrize("stage", ["dpo", "rm"])
def test_preference_stages(assets, tmp_path, stage):
    out = tmp_path / stage
    extra = {"losia_output_rank_factor": 0.0} if stage == "rm" else {}
    result = run_cli(
        "train",
        train_config(assets, out, stage=stage, dataset="demo_pairs", max_steps=4, save_steps=100, **extra),
        tmp_path,
    )
    assert_ok(result)
    losses = [
        json.loads(line)["loss"]
        for line in (out / "trainer_log.jsonl").read_text().splitlines()
        if json.loads(line).get("loss") is not None
    ]
    assert losses[-1] < losses[0]
