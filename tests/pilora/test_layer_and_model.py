"""PiLoRA layers and models: Eq. 10 == W0 + merged delta, compact gradients == masked dense gradients, stage switch,
trainable counts, and the saved adapter loaded by plain peft as a LoRA giving the same logits."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losia_factory.pilora import PiloraConfig, PiloraConfigError, PiloraLinear, attach_pilora

R, R_SUP, SCALING = 4, 2, 2.0


def make_layer(out_features=10, in_features=7, mask=(1, 0, 1, 1, 0, 0, 1, 0, 0, 1), init="fresh", bias=True):
    generator = torch.Generator().manual_seed(3)
    base = nn.Linear(in_features, out_features, bias=bias)
    layer = PiloraLinear(base, R, R_SUP, SCALING, 0.0, generator)
    with torch.no_grad():
        layer.lora_B.normal_(generator=generator)
    layer.enter_stage2(torch.tensor(mask, dtype=torch.bool), init, generator)
    with torch.no_grad():  # non-zero factors everywhere, so every term of Eq. 10 is exercised
        b, dominant, supplementary = layer.lora_B, layer.dominant_idx, layer.supplementary_idx
        b[dominant, :R] = torch.randn(dominant.numel(), R, generator=generator)
        b[supplementary, R:] = torch.randn(supplementary.numel(), R_SUP, generator=generator)
        layer.lora_A[R:] = torch.randn(R_SUP, layer.in_features, generator=generator)
    return layer


def test_eq10_forward_equals_w0_plus_merged_delta():
    layer = make_layer()
    x = torch.randn(3, 5, 7)
    expected = F.linear(x, layer.base_layer.weight + layer.delta_weight(), layer.base_layer.bias)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    # The delta has the masked structure of Eq. 11: dominant rows from (B_d, A_d), the others from (B_s, A_s).
    delta = layer.delta_weight()
    mask, f = layer.dominant_mask, layer.factors()
    assert torch.allclose(delta[mask], SCALING * f["B_d"] @ f["A_d"], atol=1e-6)
    assert torch.allclose(delta[~mask], SCALING * f["B_s"] @ f["A_s"], atol=1e-6)


def test_compact_gradients_equal_the_masked_dense_form():
    layer = make_layer()
    x, target = torch.randn(6, 7), torch.randn(6, 10)
    F.mse_loss(layer(x), target).backward()
    mask, f = layer.dominant_mask, layer.factors()
    dense = {
        "b_d": torch.zeros(10, R).index_copy(0, layer.dominant_idx, f["B_d"]).requires_grad_(),
        "a_d": f["A_d"].clone().requires_grad_(),
        "b_s": torch.zeros(10, R_SUP).index_copy(0, layer.supplementary_idx, f["B_s"]).requires_grad_(),
        "a_s": f["A_s"].clone().requires_grad_(),
    }
    m = mask.float().unsqueeze(1)
    weight = (
        layer.base_layer.weight
        + SCALING * (m * dense["b_d"]) @ dense["a_d"]
        + SCALING * ((1 - m) * dense["b_s"]) @ dense["a_s"]
    )
    F.mse_loss(F.linear(x, weight, layer.base_layer.bias), target).backward()
    grad_b = layer.lora_B.grad
    assert torch.allclose(grad_b[mask, :R], dense["b_d"].grad[mask], atol=1e-6)
    assert torch.allclose(grad_b[~mask, R:], dense["b_s"].grad[~mask], atol=1e-6)
    assert torch.allclose(layer.lora_A.grad[:R], dense["a_d"].grad, atol=1e-6)
    assert torch.allclose(layer.lora_A.grad[R:], dense["a_s"].grad, atol=1e-6)
    # The entries of lora_B outside the two compact blocks take no part: exactly zero gradient, so they stay zero.
    assert torch.count_nonzero(grad_b[mask, R:]) == 0 and torch.count_nonzero(grad_b[~mask, :R]) == 0
    assert layer.base_layer.weight.grad is None


def test_trainable_count_is_the_compact_one():
    layer = make_layer()
    dominant = int(layer.dominant_idx.numel())
    assert layer.num_trainable() == R * 7 + dominant * R + R_SUP * 7 + (10 - dominant) * R_SUP
    assert layer.lora_factors()[1].shape == (10, R + R_SUP)  # exported: rank r + r' with zero rows outside masks


def test_carry_keeps_stage_one_update_on_dominant_rows_and_its_best_rank_r_prime_elsewhere():
    generator = torch.Generator().manual_seed(0)
    layer = PiloraLinear(nn.Linear(7, 10), R, R_SUP, SCALING, 0.0, generator)
    with torch.no_grad():
        layer.lora_B.normal_(generator=generator)
    before = layer.delta_weight()
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 0, 1], dtype=torch.bool)
    layer.enter_stage2(mask, "carry", generator)
    after = layer.delta_weight()
    assert torch.allclose(after[mask], before[mask], atol=1e-6)
    singular = torch.linalg.svdvals(before[~mask])
    residual = torch.linalg.matrix_norm(after[~mask] - before[~mask])
    assert torch.isclose(residual, singular[R_SUP:].norm(), atol=1e-4)  # Eckart-Young: the optimal error


def test_fresh_stage_two_starts_from_w0():
    layer = make_layer()
    layer2 = PiloraLinear(nn.Linear(7, 10), R, R_SUP, SCALING, 0.0, torch.Generator().manual_seed(1))
    layer2.enter_stage2(torch.ones(10, dtype=torch.bool), "fresh", torch.Generator().manual_seed(2))
    assert torch.count_nonzero(layer2.delta_weight()) == 0
    assert layer.stage == 2
    with pytest.raises(RuntimeError, match="already"):
        layer.enter_stage2(torch.ones(10, dtype=torch.bool), "fresh", torch.Generator())


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("rank", 0, "rank must be an integer >= 1"),
        ("supplementary_rank", 64, "must not exceed `rank`"),
        ("dropout", 1.0, "dropout must be a number in [0, 1)"),
        ("interval", 0, "interval must be an integer >= 1"),
        ("partition", "median", "partition must be one of consistent, top_half, cumulative"),
        ("threshold", 0.0, "threshold must be a number in (0, 1]"),
        ("init", "svd", "init must be one of fresh, carry"),
        ("probe_ratio", 1.0, "probe_ratio must be a number in (0, 1)"),
    ],
)
def test_bad_config_values_name_the_field(field, value, needle):
    with pytest.raises(PiloraConfigError, match=re.escape(needle)) as err:
        PiloraConfig(**{field: value})
    assert err.value.field == field


# -- whole models ------------------------------------------------------------------------------------------------


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.core.test_discovery import COMMON  # the tiny LLaMA shape of the discovery tests

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**COMMON)).eval()


def train_both_stages(model, config, steps=8):
    pilora = attach_pilora(model, config)
    generator = torch.Generator().manual_seed(5)
    optimizer = torch.optim.AdamW(pilora.trainable_parameters(), lr=1e-2)
    masks = None
    for step in range(steps):
        ids = torch.randint(0, 64, (4, 12), generator=generator)
        model(input_ids=ids, labels=ids).loss.backward()
        pilora.observe(step)
        optimizer.step()
        optimizer.zero_grad()
        if pilora.switch_due(step, steps):
            masks = pilora.enter_stage2()
            for param in pilora.trainable_parameters():
                optimizer.state.pop(param, None)  # the same tensors, new LoRAs: fresh Adam moments
    return pilora, masks


def test_two_stages_on_a_llama_train_the_paper_placement():
    model = tiny_llama()
    config = PiloraConfig(rank=4, supplementary_rank=1, alpha=8, dropout=0.0, probe_steps=4, interval=1)
    pilora, masks = train_both_stages(model, config)
    names = sorted({n.rsplit(".", 1)[-1] for n in pilora.layers})
    assert names == ["down_proj", "k_proj", "q_proj", "up_proj", "v_proj"] and len(pilora.layers) == 10
    assert pilora.stage == 2 and set(masks) == set(pilora.layers)
    assert all(counter.probes == 4 for counter in pilora.counters.values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    lora_r = sum(4 * (layer.in_features + layer.out_features) for layer in pilora.layers.values())
    assert pilora.num_trainable() < lora_r  # fewer than a LoRA of the same r (r' < r on the supplementary rows)


def test_saved_adapter_loads_in_plain_peft_and_gives_the_same_logits(tmp_path):
    from peft import PeftModel

    base_dir = tmp_path / "base"
    tiny_llama(seed=1).save_pretrained(base_dir)
    model = tiny_llama(seed=1)
    config = PiloraConfig(rank=4, supplementary_rank=2, alpha=8, dropout=0.0, probe_steps=3, partition="top_half")
    pilora, _ = train_both_stages(model, config, steps=6)
    pilora.save_adapter(tmp_path / "adapter", base_model_name_or_path=str(base_dir))
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == adapter_config["lora_alpha"] == 6
    assert (tmp_path / "adapter" / "pilora_masks.safetensors").exists()

    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    from transformers import LlamaForCausalLM

    loaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
    with torch.no_grad():
        theirs = loaded(input_ids=ids).logits
        merged = loaded.merge_and_unload()(input_ids=ids).logits
    diff = (ours - theirs).abs().max().item()
    print(f"max |logits_pilora - logits_peft| = {diff:.3g}")
    assert diff < 1e-5
    assert (ours - merged).abs().max().item() < 1e-5
    assert (ours - LlamaForCausalLM.from_pretrained(base_dir)(input_ids=ids).logits).abs().max() > 1e-3


def test_merge_folds_the_update_into_the_base_weights():
    model = tiny_llama(seed=3)
    config = PiloraConfig(rank=4, supplementary_rank=1, alpha=8, dropout=0.0, probe_steps=2)
    pilora, _ = train_both_stages(model, config, steps=4)
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        pilora.merge()
        after = model(input_ids=ids).logits
    assert all(torch.count_nonzero(layer.delta_weight()) == 0 for layer in pilora.layers.values())
    assert (before - after).abs().max().item() < 1e-5


def test_a_model_without_decoder_layers_is_refused_without_naming_losia_options():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))  # no ModuleList of decoder layers
    with pytest.raises(PiloraConfigError, match=r"no nn\.ModuleList of blocks") as err:
        attach_pilora(model, PiloraConfig(target_modules="all"))
    assert err.value.field == "target_modules" and "layers_path" not in str(err.value)
