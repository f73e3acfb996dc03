import json

import pytest
import torch
from safetensors.torch import save_file

from losia_factory.analysis.run import load_run
from losia_factory.analysis.weights import ComparedWeights, changed_share, similarity_table, singular_similarity
from losia_factory.model_files import WeightReader
from tests.analysis.fake_run import DOWN, HEAD, Q, base_weights, make_run, trained_weights


def test_changed_share_and_nothing_outside_the_blocks(tmp_path):
    folder = make_run(tmp_path / "run")
    run = load_run(folder)
    with WeightReader(tmp_path / "base") as base, WeightReader(folder) as trained:
        data = changed_share(run, base, trained)
    assert data["targets"][Q] == {"changed": pytest.approx(2 / 48), "outside_blocks": 0}
    assert data["targets"][DOWN] == {"changed": pytest.approx(1 / 60), "outside_blocks": 0}
    assert data["targets"][HEAD] == {"changed": pytest.approx(6 / 72), "outside_blocks": 0}
    assert data["other_changed"] == {}


def test_a_change_outside_every_block_is_counted(tmp_path):
    folder = make_run(tmp_path / "run")
    weights = trained_weights(base_weights())
    weights[f"{Q}.weight"][7, 5] += 1.0  # output 7 / input 5 was never in a q_proj block
    weights["model.norm.weight"][0] = -0.0 + 2.0
    save_file(weights, str(folder / "model.safetensors"))
    with WeightReader(tmp_path / "base") as base, WeightReader(folder) as trained:
        data = changed_share(load_run(folder), base, trained)
    assert data["targets"][Q] == {"changed": pytest.approx(3 / 48), "outside_blocks": 1}
    assert data["other_changed"] == {"model.norm.weight": pytest.approx(1 / 6)}


def test_identical_weights_have_similarity_one_and_no_intruders():
    weight = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    result = singular_similarity(weight, weight.clone(), top=10)
    assert result["k"] == 10
    assert result["aligned"] == pytest.approx([1.0] * 10, abs=1e-9)
    assert result["mean_best"] == pytest.approx(1.0, abs=1e-9) and result["intruders"] == 0


def test_a_strong_rank_one_update_is_an_intruder_a_sparse_block_is_not():
    generator = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(32, 32, generator=generator, dtype=torch.float64))
    spectrum = torch.linspace(10, 1, 32, dtype=torch.float64)
    base = (u * spectrum) @ v.T
    # A new direction, orthogonal to the top 8 singular vectors on both sides, with the largest singular value.
    direction = u[:, 8:] @ torch.randn(24, generator=generator, dtype=torch.float64)
    direction /= direction.norm()
    lora_like = base + 30.0 * torch.outer(direction, v[:, 20])
    sparse = base.clone()
    sparse[:4, :4] += 0.01
    low_rank = singular_similarity(base, lora_like, top=8)
    small_sparse = singular_similarity(base, sparse, top=8)
    # The top trained vector is the new direction: it is not the base's top vector (aligned ~ 0) ...
    assert low_rank["aligned"][0] < 0.1
    assert small_sparse["mean_aligned"] > 0.99 and small_sparse["intruders"] == 0
    # ... and its best match among all base vectors stays well below 1.
    assert low_rank["best"][0] < 0.9 < small_sparse["best"][0]
    assert low_rank["intruders"] == 1


def test_a_lora_adapter_is_merged_like_peft(tmp_path):
    folder = make_run(tmp_path / "run")
    adapter = tmp_path / "lora"
    adapter.mkdir()
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 6, generator=generator), torch.randn(8, 2, generator=generator)
    save_file(
        {f"base_model.model.{Q}.lora_A.weight": a, f"base_model.model.{Q}.lora_B.weight": b},
        str(adapter / "adapter_model.safetensors"),
    )
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 8}))
    with WeightReader(tmp_path / "base") as base, WeightReader(folder) as trained:
        compared = ComparedWeights(adapter, base)
        expected = base.get(f"{Q}.weight") + 4.0 * (b @ a)
        assert torch.allclose(compared.get(Q), expected, atol=1e-6)
        assert torch.equal(compared.get(DOWN), base.get(f"{DOWN}.weight"))  # not adapted
        table = similarity_table(load_run(folder), base, trained, top=3, compare=compared, layers={0})
    assert table["compare_kind"] == "LoRA r=2"
    assert set(table["targets"]) == {Q, DOWN, HEAD}  # lm_head has no decoder layer: never filtered out
    assert table["targets"][DOWN]["compare"]["aligned"] == pytest.approx([1.0] * 3, abs=1e-9)
    assert set(table["summary"]) == {"q_proj", "down_proj", "lm_head"}
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "use_dora": True}))
    with pytest.raises(ValueError, match=r"--compare .* DoRA"):
        ComparedWeights(adapter, None)
