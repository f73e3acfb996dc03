"""The benchmark's report: schema, every method trained, and the estimator's arithmetic."""

from __future__ import annotations

import json
import math

import pytest

from losia_factory import bench, estimate
from losia_factory.core import subnet_size

TINY = bench.BenchSpec(
    hidden_size=64,
    num_layers=2,
    intermediate_size=128,
    num_heads=4,
    num_kv_heads=4,
    vocab_size=256,
    batch_size=2,
    seq_len=16,
    steps=2,
    warmup=1,
    time_slot=4,
)
KEYS = {
    "us_per_token": float,
    "forward_us": float,
    "backward_us": float,
    "optimizer_us": float,
    "peak_mem_mb": float,
    "trainable_params": int,
}


@pytest.fixture(scope="module")
def report():
    pytest.importorskip("peft")
    pytest.importorskip("galore_torch")
    result = bench.run(TINY, list(bench.METHODS), [False, True], progress=lambda *a, **k: None, isolated=False)
    result["ratios"] = bench.ratios(result)
    return json.loads(json.dumps(result))  # what --json writes


def test_schema(report):
    assert isinstance(report["device"], str) and report["model"]["hidden_size"] == 64
    assert set(report["methods"]) == {m + s for m in bench.METHODS for s in ("", "_gc")}
    for name, figures in report["methods"].items():
        for key, kind in KEYS.items():
            assert isinstance(figures[key], kind), (name, key)
        assert figures["us_per_token"] > 0 and figures["peak_mem_mb"] > 0
        total = figures["forward_us"] + figures["backward_us"] + figures["optimizer_us"]
        assert figures["us_per_token"] == pytest.approx(total, rel=0.5)
    for suffix in ("", "_gc"):
        assert report["ratios"][f"pilora{suffix} / lora{suffix} latency"] > 0


def test_every_method_trained(report):
    for name, figures in report["methods"].items():
        assert figures["loss_finite"], name
        assert figures["trained"], f"{name}: the parameters it trains did not change"
    methods = report["methods"]
    assert methods["floor"]["trainable_params"] == 0 and methods["floor"]["optimizer_us"] == 0
    # LoSiA trains p^2 of every decoder linear plus p_o of the output rows.
    layer = sum(
        subnet_size(o, 0.125) * subnet_size(i, 0.125) for o, i in [(64, 64)] * 4 + [(128, 64), (128, 64), (64, 128)]
    )
    assert methods["losia_pro"]["trainable_params"] == 2 * layer + subnet_size(256, 0.125) * 64
    assert methods["lora"]["trainable_params"] == 2 * (4 * (64 + 64) + 3 * (64 + 128))  # r = hidden / 64 = 1
    # PiLoRA in stage 2 at r = r' = 1 (top half dominant): A_d and A_s (1 x in each) and B_d, B_s (out rows in all).
    shapes = [(64, 64)] * 4 + [(128, 64), (128, 64), (64, 128)]
    assert methods["pilora"]["trainable_params"] == 2 * sum(2 * i + o for o, i in shapes)
    overheads = methods["losia_pro"]["losia"]
    assert 0 <= overheads["overhead_fraction"] < 10 and overheads["reselect_ms_decoder_layer"] > 0


def test_pilora_trains_fewer_parameters_than_lora_at_the_same_rank():
    pytest.importorskip("peft")
    # hidden 512: r = hidden / 64 = 8 for both, so PiLoRA gets r' = 2 (below r = 8 it gets r' = 1).
    spec = bench.replace(TINY, hidden_size=512, intermediate_size=1024, num_heads=8, num_kv_heads=8, num_layers=1)
    assert spec.lora_rank == 8
    lora = bench.measure("lora", spec, False)
    pilora = bench.measure("pilora", spec, False)
    shapes = [(512, 512)] * 4 + [(1024, 512), (1024, 512), (512, 1024)]  # (out, in) of the 7 decoder linears
    assert lora["trainable_params"] == sum(8 * (o + i) for o, i in shapes)
    # Stage 2, top half dominant: A_d (8 x in), B_d (out/2 x 8), A_s (2 x in), B_s (out/2 x 2).
    assert pilora["trainable_params"] == sum(10 * i + 5 * o for o, i in shapes)
    assert pilora["trainable_params"] < lora["trainable_params"]
    assert pilora["us_per_token"] > 0 and pilora["backward_us"] > 0 and pilora["optimizer_us"] > 0
    assert pilora["trained"] and pilora["loss_finite"]


def test_saved_activations_scale_with_the_subnet():
    saved = {
        p: bench.measure("losia_pro", bench.replace(TINY, rank_factor=p), False)["saved_activation_mb"]
        for p in (0.125, 0.25, 0.5)
    }
    plain = bench.measure("losia", TINY, False)["saved_activation_mb"]
    assert saved[0.125] < saved[0.25] < saved[0.5]
    assert saved[0.125] < plain


def test_estimator_counts_and_presets(tmp_path):
    shape = estimate.PRESETS["llama2-7b"]
    assert shape.num_parameters() == 6_738_415_616  # LLaMA-2 7B's published parameter count
    e = estimate.estimate(shape, 1 / 8, 1 / 8)
    assert e["trainable"] == 32 * (4 * 512 * 512 + 3 * 1376 * 512) + 4000 * 4096
    assert e["subnet_masters"] == 4 * e["trainable"] and e["adam_moments"] == 8 * e["trainable"]
    assert e["importance_buffers"] == 2 * 4 * (4 * 4096**2 + 3 * 4096 * 11008)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "vocab_size": 256,
            }
        )
    )
    assert estimate.load_shape(str(tmp_path)).num_layers == 2
    with pytest.raises(ValueError, match="neither a preset"):
        estimate.load_shape(str(tmp_path / "missing"))
    text = estimate.report(shape, [1 / 8], [1 / 8], "bfloat16", "float32")
    assert "| 1/8 | 1/8 | 117.6 | 122.1 |" in text
    assert math.isclose(estimate.estimate(estimate.PRESETS["gemma-2b"], 1 / 8, 1 / 64)["head_block"], 4000 * 2048)
