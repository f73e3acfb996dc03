"""llamafactory-cli train on 2 processes under FSDP2 (gloo) equals 1 process with the same global batch.

The settings of test_distributed_cli.py: global batch 8 (2 processes x 2 x accumulation 2 against 1 x 4 x 2), T=2
with 3 groups, 8 steps, four reselections; checkpoint-3 falls inside a measuring window. On CPU the runs go through
the test-only shim of cpu_fsdp_shim/ (accelerate 1.11 drops FSDP on CPU processes); on GPUs nothing is needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.llamafactory.conftest import train_distributed
from tests.llamafactory.test_cli import max_diff, weights
from tests.llamafactory.test_distributed_cli import reselections

pytestmark = pytest.mark.slow

# The same subnets and the same fp32 AdamW: only the reduction order differs (1.3e-8 measured; stock full fine-tuning
# under FSDP2 is 6e-8 from DDP). Another subnet would move the weights by ~lr = 1e-3.
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def runs(assets, tmp_path_factory, losia_references) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    found = {key: losia_references[key] for key in ("single-pro", "single-plain")}
    for pro in (True, False):
        found[f"fsdp-{'pro' if pro else 'plain'}"] = train_distributed(assets, root, "fsdp", pro)
    checkpoint = root / "fsdp-checkpoint-3"  # a copy: the uninterrupted run's folder stays as it was
    shutil.copytree(found["fsdp-pro"] / "checkpoint-3", checkpoint)
    found["fsdp-resumed"] = train_distributed(assets, root, "fsdp", True, resume_from_checkpoint=str(checkpoint))
    return found


@pytest.mark.parametrize("path", ["pro", "plain"])
def test_fsdp2_equals_one_process(runs, path):
    single, fsdp = runs[f"single-{path}"], runs[f"fsdp-{path}"]
    assert reselections(fsdp) == reselections(single) and len(reselections(single)) == 4
    diff = max_diff(weights(single), weights(fsdp))
    print(f"fsdp2 {path}: max |W - W_1proc| = {diff:.3g}")
    assert diff < TOLERANCE
    assert max_diff(weights(single), weights(single / "checkpoint-3")) > 1e3 * TOLERANCE


def test_fsdp_checkpoint_keeps_losia_state_beside_the_optimizer(runs):
    """FSDP's optimizer checkpoint drops LoSiA's entry; losia_state.pt carries it (step 3, mid-window importance)."""
    checkpoint = runs["fsdp-pro"] / "checkpoint-3"
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file()  # FSDP really sharded the run (not a silent DDP)
    optimizer = torch.load(checkpoint / "optimizer.bin", weights_only=False)
    assert set(optimizer) == {"state", "param_groups"}
    state = torch.load(checkpoint / "losia_state.pt", weights_only=True)
    assert state["step"] == 3 and state["importance"]
    for target in state["targets"]:  # whole fp32 masters, gathered from the shards
        assert target["master"].dtype == torch.float32 and target["master"].shape[0] == target["out_idx"].numel()
        if target["in_idx"] is not None:
            assert target["master"].shape[1] == target["in_idx"].numel()


def test_fsdp_resume_equals_uninterrupted(runs):
    uninterrupted, resumed = runs["fsdp-pro"], runs["fsdp-resumed"]
    diff = max_diff(weights(uninterrupted), weights(resumed))
    print(f"fsdp2 resume: max |W_resumed - W_uninterrupted| = {diff:.3g}")
    assert diff == 0.0
    assert reselections(resumed) == [r for r in reselections(uninterrupted) if r[0] > 3]


def test_fsdp_output_is_a_full_model_with_the_base_names(runs, assets):
    from transformers import AutoModelForCausalLM

    out = runs["fsdp-pro"]
    saved = load_file(out / "model.safetensors")
    assert set(saved) == set(load_file(assets["model"] / "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert max_diff(saved, {k: v for k, v in model.state_dict().items() if k in saved}) == 0.0
