"""Groups and targets are found generically, on real transformers architectures and on a toy model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from losia_factory.core import LosiaConfig, LosiaLRScheduler, attach_losia, find_decoder_layers, find_target_linears
from tests.toy_models import LLAMA_PROJECTIONS, make_toy

transformers = pytest.importorskip("transformers")

COMMON = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
ARCHS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM, {"head_dim": 8}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {}),
}
PROJ = LLAMA_PROJECTIONS


def hf_model(arch: str) -> nn.Module:
    config_cls, model_cls, extra = ARCHS[arch]
    torch.manual_seed(0)
    return model_cls(config_cls(**COMMON, **extra)).float()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_hf_architectures(arch):
    model = hf_model(arch)
    keys = list(model.state_dict())
    opt = attach_losia(model, LosiaConfig(rank_factor=0.25, output_rank_factor=0.125, time_slot=1), lr=1e-2)
    LosiaLRScheduler(opt, num_training_steps=10)
    assert opt.layout.layers_path == "model.layers"
    # The output layer's group measures first (the default output_order), then the decoder layers in order.
    assert opt.layout.groups[0] == ("lm_head",) and opt.layout.output_layer == "lm_head"
    assert opt.layout.groups[1:] == tuple(tuple(f"model.layers.{i}.{p}" for p in PROJ) for i in range(2))
    q = model.model.layers[0].self_attn.q_proj
    assert q.losia_block.shape == (8, 8)
    if arch == "qwen2":
        assert q.bias is not None and not q.bias.requires_grad
    if arch == "gemma":
        assert model.lm_head.weight is model.model.embed_tokens.weight
    assert list(model.state_dict()) == keys
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    first = model(input_ids=ids, labels=ids).loss
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    assert model(input_ids=ids, labels=ids).loss < first


def test_pattern_matching_and_errors():
    model = make_toy()
    name, layers = find_decoder_layers(model)
    assert name == "model.layers"
    picked = find_target_linears(name, layers, ("q_proj", "mlp.*"))
    assert [r.name.split(".", 3)[-1] for r in picked[0]] == [
        "self_attn.q_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    with pytest.raises(ValueError, match=r"target_modules=\['query'\] matches no nn.Linear.*q_proj"):
        find_target_linears(name, layers, ("query",))
    with pytest.raises(ValueError, match=r"layers_path='model.norm'.*not an nn.ModuleList"):
        find_decoder_layers(model, "model.norm")
    with pytest.raises(ValueError, match=r"layers_path='model.blocks' does not name"):
        find_decoder_layers(model, "model.blocks")
    with pytest.raises(ValueError, match=r"No nn.ModuleList"):
        find_decoder_layers(nn.Sequential(nn.Linear(2, 2)))


def test_explicit_layers_path_and_output_layer_off():
    model = make_toy()
    opt = attach_losia(
        model, LosiaConfig(layers_path="model.layers", output_rank_factor=0, target_modules=("o_proj",)), lr=1e-3
    )
    assert opt.layout.groups == tuple((f"model.layers.{i}.self_attn.o_proj",) for i in range(3))
    assert opt.layout.output_layer is None and not model.lm_head.weight.requires_grad
