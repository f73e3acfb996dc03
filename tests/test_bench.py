"""The benchmark's report: schema, every method trained, LoSiA's cycle average, and the estimator's arithmetic."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from losia_factory import bench, estimate
from losia_factory.bench.methods import decoder_layer_groups, output_layer_group
from losia_factory.core import subnet_size
from losia_factory.fractions import format_fraction, parse_fraction, parse_fractions

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
    result = bench.run(
        TINY, list(bench.METHODS), [False, True], progress=lambda *a, **k: None, isolated=False, interleave=True
    )
    result["ratios"] = bench.ratios(result)
    return json.loads(json.dumps(result))  # what --json writes


def test_schema(report):
    assert isinstance(report["device"], str) and report["model"]["hidden_size"] == 64
    assert set(report["methods"]) == {m + s for m in bench.METHODS for s in ("", "_gc")}
    for name, figures in report["methods"].items():
        for key, kind in KEYS.items():
            assert isinstance(figures[key], kind), (name, key)
        assert figures["us_per_token"] > 0 and figures["peak_mem_mb"] > 0
        assert figures["timing"] == "interleaved" and figures["own_process_us_per_token"] > 0
        # With two measured steps every median is a mean, so the phases add up to the step exactly.
        total = figures["forward_us"] + figures["backward_us"] + figures["optimizer_us"]
        assert figures["us_per_token"] == pytest.approx(total, rel=1e-9)
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


@pytest.mark.parametrize("name", ["losia_pro", "losia", "losia_pro_gc"])
def test_cycle_average_adds_the_output_slot_and_reselections(report, name):
    figures = report["methods"][name]
    o = figures["losia"]
    groups, slot = o["groups"], o["time_slot"]
    assert (groups, slot) == (3, 4)  # two decoder layers and the output layer, T = 4
    importance = (o["importance_ms_per_step_output_layer"] - o["importance_ms_per_step_decoder_layer"]) / groups
    reselect = (2 * o["reselect_ms_decoder_layer"] + o["reselect_ms_output_layer"]) / (groups * slot)
    extra_us_per_token = (importance + reselect) * 1e3 / TINY.tokens
    assert figures["cycle_us_per_token"] == pytest.approx(figures["us_per_token"] + extra_us_per_token, rel=1e-9)
    assert o["reselect_ms_decoder_layer"] > 0 and o["reselect_ms_output_layer"] > 0
    cycle_work = (2 * o["importance_ms_per_step_decoder_layer"] + o["importance_ms_per_step_output_layer"]) / groups
    step_ms = figures["own_process_us_per_token"] * TINY.tokens / 1e3
    assert o["overhead_fraction"] == pytest.approx((cycle_work + reselect) / step_ms, rel=1e-9)
    if name.startswith("losia_pro"):  # the headline ratios compare what a long run pays
        floor = name.replace("losia_pro", "floor")
        ratio = report["ratios"][f"{name} / {floor} latency"]
        assert ratio == pytest.approx(figures["cycle_us_per_token"] / report["methods"][floor]["us_per_token"])


def test_losia_runs_are_timed_in_a_decoder_layer_slot():
    runner = bench.Runner("losia_pro", TINY, False)
    optimizer = runner.losia
    head, decoders = output_layer_group(optimizer), decoder_layer_groups(optimizer)
    assert head == 0 and decoders == [1, 2]  # the output layer measures first (output_order "first")
    assert optimizer.global_step == 2 * TINY.time_slot
    assert optimizer.schedule.scoring_groups(optimizer.global_step) == (2,)
    assert {t.name for t in optimizer.targets if t.sink is not None} == {t.name for t in optimizer.group_targets[2]}


def test_a_failing_method_is_reported_and_the_others_go_on(monkeypatch):
    def missing(model, spec):
        raise ImportError("No module named 'galore_torch'")

    monkeypatch.setitem(bench.SETUPS, "galore", missing)
    result = bench.run(TINY, ["floor", "galore"], [False], progress=lambda *a, **k: None, isolated=False)
    assert set(result["methods"]) == {"floor"} and "galore_torch" in result["failed"]["galore"]
    assert "| galore | failed: No module named 'galore_torch'" in bench.markdown_table(result)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "floor,lorra"], "--methods: unknown ['lorra']"),
        (["--device", "tpu"], "--device must be cpu or cuda"),
        (["--device", "cuda"], "sees no CUDA device"),
        (["--dtype", "int8"], "invalid choice"),
        (["--hidden-size", "100", "--num-heads", "3"], "multiple of --num-heads"),
        (["--batch-size", "0"], "must be >= 1"),
        (["--activation-sweep", "1/8,x"], "--activation-sweep: expected a number"),
    ],
)
def test_cli_refuses_bad_settings_before_building_a_model(argv, message, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("losia_factory.bench.cli.run", lambda *a, **k: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("text, value", [("1/8", 0.125), ("0.25", 0.25), (" 1 / 16 ", 0.0625), ("1", 1.0)])
def test_fractions(text, value):
    assert parse_fraction(text) == value
    assert parse_fractions(f"{text}, ,1/2") == [value, 0.5]
    assert format_fraction(value) in {"1/8", "1/4", "1/16", "1"}
    assert format_fraction(0) == "0" and format_fraction(0.3) == "0.3"
    for bad in ("x", "1/0", "1/2/3"):
        with pytest.raises(ValueError, match="expected a number or a fraction"):
            parse_fraction(bad)


def test_pilora_trains_fewer_parameters_than_lora_at_the_same_rank():
    pytest.importorskip("peft")
    # hidden 512: r = hidden / 64 = 8 for both, so PiLoRA gets r' = 2 (below r = 8 it gets r' = 1).
    spec = replace(TINY, hidden_size=512, intermediate_size=1024, num_heads=8, num_kv_heads=8, num_layers=1)
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
        p: bench.measure("losia_pro", replace(TINY, rank_factor=p), False)["saved_activation_mb"]
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
