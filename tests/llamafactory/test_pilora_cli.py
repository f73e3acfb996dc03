"""finetuning_type: pilora end to end: train through llamafactory-cli, then export and chat as a plain LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.llamafactory.conftest import assert_chat_ok, assert_ok, run_cli, train_config

pytestmark = pytest.mark.slow

STEPS, PROBE = 12, 4


def pilora_config(assets, out: Path, **overrides) -> dict:
    config = {k: v for k, v in train_config(assets, out).items() if not k.startswith("losia_")}
    config.update(
        finetuning_type="pilora",
        max_steps=STEPS,
        save_steps=100,
        learning_rate=5e-3,
        pilora_rank=8,
        pilora_supplementary_rank=2,
        pilora_alpha=16,
        pilora_dropout=0.0,
        pilora_probe_steps=PROBE,
        pilora_target="all",
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def run(assets, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pilora")
    out = root / "out"
    result = run_cli("train", pilora_config(assets, out), root)
    assert_ok(result)
    return {"root": root, "out": out, "log": result.stdout + result.stderr}


def test_training_writes_a_standard_lora_adapter_and_the_partition(run):
    out = run["out"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 10  # r + r'
    assert not (out / "model.safetensors").exists()
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 2 * 7  # 2 layers x 7 projections x (A, B)
    partition = json.loads((out / "pilora_partition.json").read_text())
    assert partition["switch_step"] == PROBE
    masks = load_file(str(out / "pilora_masks.safetensors"))
    for name, sizes in partition["layers"].items():
        mask = masks[f"{name}.mask"]
        assert int(mask.sum()) == sizes["dominant"] and mask.numel() == sizes["neurons"]
        assert 0 < sizes["dominant"] < sizes["neurons"]
        b = tensors[f"base_model.model.{name}.lora_B.weight"]
        # B has zero rows outside each group's mask: dominant columns [:8], supplementary columns [8:].
        assert torch.count_nonzero(b[~mask, :8]) == 0 and torch.count_nonzero(b[mask, 8:]) == 0
    assert "PiLoRA stage 2 from step 5" in run["log"]
    lora_params = sum(
        8 * (t.shape[1] + tensors[k.replace("lora_A", "lora_B")].shape[0]) for k, t in tensors.items() if "lora_A" in k
    )
    assert partition["trainable"] < lora_params


def test_export_merges_and_the_merged_logits_equal_the_adapter_model(run, assets):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    exported = run["root"] / "merged"
    result = run_cli(
        "export",
        {
            "model_name_or_path": str(assets["model"]),
            "adapter_name_or_path": str(run["out"]),
            "finetuning_type": "lora",
            "template": "chatml",
            "export_dir": str(exported),
            "export_device": "cpu",
        },
        run["root"],
    )
    assert_ok(result)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32)
        adapter = PeftModel.from_pretrained(base, run["out"])(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32)(input_ids=ids).logits
    diff = (merged - adapter).abs().max().item()
    print(f"max |logits_merged - logits_adapter| = {diff:.3g}")
    assert diff < 1e-4
    assert (adapter - plain).abs().max().item() > 1e-3  # the adapter changes the model


def test_chat_loads_the_adapter_as_lora(run, assets):
    result = run_cli(
        "chat",
        {
            "model_name_or_path": str(assets["model"]),
            "adapter_name_or_path": str(run["out"]),
            "finetuning_type": "lora",
            "template": "chatml",
            "max_new_tokens": 8,
            "do_sample": False,
        },
        run["root"],
        stdin="What is 2 plus 3?\nexit\n",
        timeout=300,
    )
    assert_chat_ok(result)
    assert "Assistant:" in result.stdout


def test_loading_with_finetuning_type_pilora_explains_what_to_do(run, assets):
    result = run_cli(
        "chat",
        {"model_name_or_path": str(assets["model"]), "finetuning_type": "pilora", "template": "chatml"},
        run["root"],
        stdin="exit\n",
        timeout=300,
    )
    assert result.returncode != 0
    assert "load it with finetuning_type: lora and adapter_name_or_path" in result.stdout + result.stderr
