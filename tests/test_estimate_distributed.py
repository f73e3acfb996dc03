"""Data-parallel options of the memory estimator (``losia-factory estimate --gpus N --zero {0,1,2,3}`` or ``--fsdp``).

Every expected number is computed by hand from the shapes, not by calling the estimator's own helpers.
"""

from __future__ import annotations

import pytest

from losia_factory import cli, estimate

# Two decoder layers, hidden 8, MLP 16, 2 query heads and 1 key/value head of size 4, vocabulary 32.
TINY = estimate.ModelShape("tiny", 8, 16, 2, 2, 1, 4, 32, False)
# Linear weights of one layer: q 8x8, k 4x8, v 4x8, o 8x8, gate 16x8, up 16x8, down 8x16.
TINY_LAYER = 64 + 32 + 32 + 64 + 128 + 128 + 128  # 576
# p = 1/2 keeps half the rows and columns: 4x4 + 2x4 + 2x4 + 4x4 + 8x4 + 8x4 + 4x8.
TINY_LAYER_BLOCKS = 16 + 8 + 8 + 16 + 32 + 32 + 32  # 144
TINY_HEAD_BLOCK = 8 * 8  # p_o = 1/4 of 32 rows, all 8 columns
TINY_TRAINABLE = 2 * TINY_LAYER_BLOCKS + TINY_HEAD_BLOCK  # 352
TINY_PARAMS = 2 * (TINY_LAYER + 2 * 8) + 2 * 32 * 8 + 8  # layers with their norms, embedding, head, final norm

LLAMA7B_LAYER = 4 * 4096 * 4096 + 3 * 4096 * 11008  # 202,375,168
LLAMA13B_LAYER = 4 * 5120 * 5120 + 3 * 5120 * 13824
LLAMA7B_TRAINABLE = 32 * (4 * 512 * 512 + 3 * 1376 * 512) + 4000 * 4096  # p = p_o = 1/8


def tiny(gpus: int = 1, zero: int = 0, weight_dtype: str = "bfloat16") -> dict[str, float]:
    return estimate.estimate(TINY, 1 / 2, 1 / 4, weight_dtype, "float32", gpus, zero)


def test_tiny_shape_hand_counts():
    assert TINY_PARAMS == TINY.num_parameters() == 1704
    e = tiny()
    assert (e["trainable"], e["layer_blocks"], e["head_block"]) == (352, 144, 64)


def test_single_gpu_without_zero_is_the_old_estimate():
    old = {
        "weights": TINY_PARAMS * 2,
        "block_copies": 0,
        "subnet_masters": TINY_TRAINABLE * 4,
        "adam_moments": TINY_TRAINABLE * 8,
        "block_gradients": TINY_TRAINABLE * 4,
        "measuring_full_gradient": TINY_LAYER * 4,  # the largest group: a layer (576) beats the head (256)
        "importance_buffers": 2 * TINY_LAYER * 4,
    }
    e = tiny()
    assert {k: e[k] for k in old} == old
    assert e["total_static"] == sum(old.values()) == 15952
    assert estimate.estimate(TINY, 1 / 2, 1 / 4) == e  # the defaults are one GPU, no ZeRO
    # Plain DDP: every rank holds everything, so the per-GPU figures do not depend on the number of GPUs.
    assert tiny(gpus=8, zero=0) == e


def test_llama7b_single_gpu_unchanged():
    e = estimate.estimate(estimate.PRESETS["llama2-7b"], 1 / 8, 1 / 8, gpus=1, zero=0)
    assert e["trainable"] == LLAMA7B_TRAINABLE
    assert e["subnet_masters"] == 4 * LLAMA7B_TRAINABLE and e["adam_moments"] == 8 * LLAMA7B_TRAINABLE
    assert e["block_gradients"] == 4 * LLAMA7B_TRAINABLE and e["block_copies"] == 0
    assert e["importance_buffers"] == 2 * 4 * LLAMA7B_LAYER
    assert e["weights"] == 2 * 6_738_415_616


def test_zero2_on_8_gpus_tiny():
    e = tiny(gpus=8, zero=2)
    expected = {
        "weights": TINY_PARAMS * 2,  # whole: LoSiA writes into the backbone
        "block_copies": TINY_TRAINABLE * 2,  # the model's bf16 block parameters, whole
        "subnet_masters": TINY_TRAINABLE * 4 // 8,
        "adam_moments": TINY_TRAINABLE * 8 // 8,
        "block_gradients": TINY_TRAINABLE * 2 // 8,  # bf16, partitioned
        "measuring_full_gradient": TINY_LAYER * 4,
        "importance_buffers": 2 * TINY_LAYER * 4,
    }
    assert {k: e[k] for k in expected} == expected
    assert e["total_static"] == 3408 + 704 + 176 + 352 + 88 + 2304 + 4608


def test_zero1_partitions_optimizer_states_but_not_gradients():
    e = tiny(gpus=8, zero=1)
    assert e["subnet_masters"] == TINY_TRAINABLE * 4 // 8 and e["adam_moments"] == TINY_TRAINABLE
    assert e["block_gradients"] == TINY_TRAINABLE * 2
    assert e["block_copies"] == TINY_TRAINABLE * 2


def test_zero_on_one_gpu_only_moves_the_masters():
    e = tiny(gpus=1, zero=2)
    assert e["subnet_masters"] == TINY_TRAINABLE * 4 and e["adam_moments"] == TINY_TRAINABLE * 8
    assert e["block_copies"] == TINY_TRAINABLE * 2 and e["block_gradients"] == TINY_TRAINABLE * 2
    # fp32 training: the model-side copies and the gradients are fp32 too.
    e32 = tiny(gpus=1, zero=1, weight_dtype="float32")
    assert e32["block_copies"] == TINY_TRAINABLE * 4 and e32["block_gradients"] == TINY_TRAINABLE * 4


def test_llama7b_zero2_8_gpus_divides_partitioned_terms_by_8():
    shape = estimate.PRESETS["llama2-7b"]
    one = estimate.estimate(shape, 1 / 8, 1 / 8, gpus=1, zero=2)
    eight = estimate.estimate(shape, 1 / 8, 1 / 8, gpus=8, zero=2)
    for key in ("subnet_masters", "adam_moments", "block_gradients"):
        assert eight[key] * 8 == one[key]
    for key in ("weights", "block_copies", "measuring_full_gradient", "importance_buffers", "trainable"):
        assert eight[key] == one[key]
    assert eight["subnet_masters"] == 4 * LLAMA7B_TRAINABLE // 8
    assert eight["adam_moments"] == LLAMA7B_TRAINABLE
    assert eight["block_gradients"] == 2 * LLAMA7B_TRAINABLE // 8
    assert eight["importance_buffers"] == 2 * 4 * LLAMA7B_LAYER
    assert eight["measuring_full_gradient"] == 4 * LLAMA7B_LAYER


@pytest.mark.parametrize(
    ("preset", "layer", "layers"), [("llama2-7b", LLAMA7B_LAYER, 32), ("llama2-13b", LLAMA13B_LAYER, 40)]
)
def test_importance_all_reduce_bytes(preset, layer, layers):
    shape = estimate.PRESETS[preset]
    c = estimate.communication(shape, 1 / 8, 1 / 8, "bfloat16", zero=2)
    assert c["importance_layer"] == 4 * layer
    assert c["importance_head"] == 4 * 32000 * shape.hidden_size
    # Async mode: each of the 32/40 layers and the output layer measures for one slot in layers + 1.
    assert c["importance_mean"] == pytest.approx(4 * (layers * layer + 32000 * shape.hidden_size) / (layers + 1))
    frozen_head = estimate.communication(shape, 1 / 8, 0)
    assert frozen_head["importance_head"] == 0 and frozen_head["importance_mean"] == 4 * layer


def test_llama7b_importance_all_reduce_is_809_mb():
    c = estimate.communication(estimate.PRESETS["llama2-7b"], 1 / 8, 1 / 8)
    assert LLAMA7B_LAYER == 202_375_168
    assert c["importance_layer"] == 4 * (4 * 4096 * 4096 + 3 * 4096 * 11008) == 809_500_672


def test_block_gradient_traffic_dtype():
    shape = estimate.PRESETS["llama2-7b"]
    ddp = estimate.communication(shape, 1 / 8, 1 / 8, "bfloat16", zero=0)
    assert ddp["block_gradients"] == 4 * LLAMA7B_TRAINABLE and ddp["block_allgather"] == 0  # fp32 masters
    zero = estimate.communication(shape, 1 / 8, 1 / 8, "bfloat16", zero=1)
    assert zero["block_gradients"] == 2 * LLAMA7B_TRAINABLE and zero["block_allgather"] == 2 * LLAMA7B_TRAINABLE
    assert zero["total_mean"] == pytest.approx(zero["importance_mean"] + 4 * LLAMA7B_TRAINABLE)


def test_report_default_has_no_parallel_lines():
    shape = estimate.PRESETS["llama2-7b"]
    text = estimate.report(shape, [1 / 8], [1 / 8], "bfloat16", "float32")
    assert text == estimate.report(shape, [1 / 8], [1 / 8], "bfloat16", "float32", gpus=1, zero=0)
    assert "Data parallel" not in text and "Communication" not in text and "block copies" not in text
    assert "masters/moments/gradients in float32" in text
    assert text.endswith("| 1/8 | 1/8 | 117.6 | 122.1 | 12.55 | 0.44 | 0.88 | 0.44 | 0.75 | 1.51 | 16.56 | 21.87 |")


def test_report_zero2_8_gpus():
    text = estimate.report(estimate.PRESETS["llama2-7b"], [1 / 8], [1 / 8], "bfloat16", "float32", gpus=8, zero=2)
    assert "per GPU, 8 GPUs, DeepSpeed ZeRO-2" in text
    assert "809,500,672 bytes (202,375,168 weights x 4 B)" in text
    assert "block gradients in bfloat16" in text
    # weights 12.55, copies 0.22, masters 0.05, moments 0.11, grads 0.03, sink 0.75, importance 1.51 (GiB)
    assert "| 1/8 | 1/8 | 117.6 | 122.1 | 12.55 | 0.22 | 0.05 | 0.11 | 0.03 | 0.75 | 1.51 | 15.22 | - |" in text
    assert f"| 1/8 | 1/8 | {809_500_672 / 2**20:.1f} |" in text


def test_cli_accepts_zero_on_one_gpu(capsys):
    assert cli.main(["estimate", "--rank-factor", "1/8", "--output-rank-factor", "1/8", "--zero", "1"]) == 0
    assert "per GPU, 1 GPU, DeepSpeed ZeRO-1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zero", "4"], "expected 0, 1, 2 or 3"),
        (["--gpus", "0"], "needs at least 1 GPU"),
        (["--gpus", "-2"], "needs at least 1 GPU"),
        (["--gpus", "two"], "expected an integer"),
    ],
)
def test_cli_refuses_bad_parallel_settings(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["estimate", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_zero3_on_8_gpus_tiny_partitions_the_backbone_too():
    e = tiny(gpus=8, zero=3)
    expected = {
        "weights": TINY_PARAMS * 2 // 8,  # 1704 bf16 weights split 8 ways: 426 bytes
        "block_copies": TINY_TRAINABLE * 2 // 8,
        "subnet_masters": TINY_TRAINABLE * 4 // 8,
        "adam_moments": TINY_TRAINABLE * 8 // 8,
        "block_gradients": TINY_TRAINABLE * 2 // 8,
        "measuring_full_gradient": TINY_LAYER * 4,  # whole: every rank scores the averaged gradient
        "importance_buffers": 2 * TINY_LAYER * 4,
        "gathered_weights": TINY_LAYER * 2,  # one layer's weights gathered whole in bf16
    }
    assert {k: e[k] for k in expected} == expected
    assert e["total_static"] == 426 + 88 + 176 + 352 + 88 + 2304 + 4608 + 1152
    assert tiny(gpus=8, zero=2)["gathered_weights"] == 0


def test_zero3_communication_adds_the_weight_gathers():
    shape = estimate.PRESETS["llama2-7b"]
    z2 = estimate.communication(shape, 1 / 8, 1 / 8, "bfloat16", zero=2)
    z3 = estimate.communication(shape, 1 / 8, 1 / 8, "bfloat16", zero=3)
    assert z3["weight_allgather"] == 2 * 2 * 6_738_415_616  # forward + backward, bf16
    # The measuring group's weights, mean over the 33 groups (32 layers + the output layer), bf16.
    assert z3["measuring_weights"] == pytest.approx(2 * (32 * LLAMA7B_LAYER + 32000 * 4096) / 33)
    assert z3["total_mean"] == pytest.approx(z2["total_mean"] + z3["weight_allgather"] + z3["measuring_weights"])
    assert z2["weight_allgather"] == z2["measuring_weights"] == 0


def test_report_zero3_70b_8_gpus():
    text = estimate.report(estimate.PRESETS["llama2-70b"], [1 / 8], [1 / 8], "bfloat16", "float32", gpus=8, zero=3)
    assert "per GPU, 8 GPUs, DeepSpeed ZeRO-3" in text
    assert "weights, block copies, masters, moments and block grads are split 8 ways" in text
    # 68.98B bf16 weights / 8 = 16.06 GiB per GPU; one 70B layer is 855,638,016 weights.
    layer = 2 * 8192 * 8192 + 2 * 1024 * 8192 + 3 * 8192 * 28672  # q, o; k, v (8 key/value heads); the MLP
    assert f"a decoder layer {4 * layer:,} bytes ({layer:,} weights x 4 B)" in text and layer == 855_638_016
    assert f"the output layer, on 1 step in 81 when p_o > 0: {4 * 32000 * 8192:,} bytes" in text
    assert "| 1/8 | 1/8 | 1102.3 | - | 16.06 |" in text
    assert "weight all-gather" in text and "gathered" in text


def test_library_refuses_bad_gpus():
    with pytest.raises(ValueError, match="--gpus must be an integer >= 1"):
        estimate.estimate(TINY, 1 / 2, 1 / 4, gpus=0)


def test_fsdp_on_8_gpus_tiny_splits_everything_trainable_or_not_in_fp32():
    e = estimate.estimate(TINY, 1 / 2, 1 / 4, "bfloat16", "float32", gpus=8, fsdp=True)
    expected = {
        "weights": TINY_PARAMS * 4 // 8,  # accelerate's FSDP2 stores the sharded model in fp32: 852 bytes
        "block_copies": 0,  # the fp32 blocks are the masters themselves
        "subnet_masters": TINY_TRAINABLE * 4 // 8,
        "adam_moments": TINY_TRAINABLE * 8 // 8,
        "block_gradients": TINY_TRAINABLE * 4 // 8,  # sharded in the blocks' dtype
        "measuring_full_gradient": TINY_LAYER * 4,
        "importance_buffers": 2 * TINY_LAYER * 4,
        "gathered_weights": TINY_LAYER * 2,  # one layer gathered in the compute dtype
    }
    assert {k: e[k] for k in expected} == expected
    assert e["total_static"] == 852 + 0 + 176 + 352 + 176 + 2304 + 4608 + 1152


def test_fsdp_communication_gathers_weights_with_blocks_and_measures_in_fp32():
    shape = estimate.PRESETS["llama2-7b"]
    c = estimate.communication(shape, 1 / 8, 1 / 8, "bfloat16", fsdp=True)
    assert c["weight_allgather"] == 2 * 2 * (6_738_415_616 + LLAMA7B_TRAINABLE)  # forward + backward, bf16
    assert c["block_gradients"] == 2 * LLAMA7B_TRAINABLE  # reduce-scattered in bf16
    assert c["block_allgather"] == 4 * LLAMA7B_TRAINABLE  # the fp32 blocks gathered for the write-back
    assert c["measuring_weights"] == pytest.approx(4 * (32 * LLAMA7B_LAYER + 32000 * 4096) / 33)
    assert c["importance_mean"] == pytest.approx(4 * (32 * LLAMA7B_LAYER + 32000 * 4096) / 33)
    parts = ("importance_mean", "block_gradients", "block_allgather", "weight_allgather", "measuring_weights")
    assert c["total_mean"] == pytest.approx(sum(c[k] for k in parts))


def test_report_fsdp_70b_8_gpus(capsys):
    cli.main(
        [
            "estimate",
            "--model",
            "llama2-70b",
            "--rank-factor",
            "1/8",
            "--output-rank-factor",
            "1/8",
            "--gpus",
            "8",
            "--fsdp",
        ]
    )
    text = capsys.readouterr().out
    assert "per GPU, 8 GPUs, FSDP2" in text and "block copies" not in text
    # 68.98B fp32 weights / 8 = 32.12 GiB per GPU, twice ZeRO-3's bf16 backbone.
    assert f"| 1/8 | 1/8 | 1102.3 | - | {68_976_648_192 * 4 / 8 / 2**30:.2f} |" in text
    assert "FSDP2 weight all-gathers in bfloat16" in text


def test_fsdp_and_zero_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["estimate", "--fsdp", "--zero", "3", "--gpus", "8"])
    assert exit_info.value.code == 2
    assert "--fsdp and --zero 3 exclude each other" in capsys.readouterr().err
