"""The Pro linear and the plain block injection against ordinary autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losia_factory.core import BlockInjectFunction, GradientSink, SubnetLinearFunction


def setup(shape_x, out_f, in_f, bias, in_all=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape_x, in_f, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out_f, in_f, generator=gen, dtype=torch.float64)
    b = torch.randn(out_f, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    out_idx = torch.tensor([0, 2, 3][: max(1, out_f // 2)])
    in_idx = None if in_all else torch.tensor([1, 2, 4][: max(1, in_f // 2)])
    block = (w[out_idx] if in_all else w[out_idx][:, in_idx]).clone().requires_grad_(True)
    upstream = torch.randn(*shape_x, out_f, generator=gen, dtype=torch.float64)
    return x, w, b, block, out_idx, in_idx, upstream


def dense(x, w, b, upstream):
    x = x if x.requires_grad else x.clone().requires_grad_(True)
    wd = w.clone().requires_grad_(True)
    y = F.linear(x, wd, b)
    gx, gw, *gb = torch.autograd.grad(y, [x, wd] + ([b] if b is not None else []), upstream)
    return y.detach(), gx, gw, (gb[0] if gb else None)


@pytest.mark.parametrize("shape_x", [(5,), (2, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("measuring", [False, True])
@pytest.mark.parametrize("in_all", [False, True])
@pytest.mark.parametrize("path", ["pro", "plain"])
def test_gradients_equal_dense_autograd(shape_x, bias, measuring, in_all, path):
    x, w, b, block, out_idx, in_idx, upstream = setup(shape_x, 6, 5, bias, in_all)
    y_ref, gx_ref, gw_ref, gb_ref = dense(x, w, b, upstream)
    sink = GradientSink() if measuring else None
    if path == "pro":
        y = SubnetLinearFunction.apply(x, w, b, block, out_idx, in_idx, sink)
    else:
        y = F.linear(x, BlockInjectFunction.apply(w, block, out_idx, in_idx, sink), b)
    inputs = [x, block] + ([b] if b is not None else [])
    gx, gblock, *gb = torch.autograd.grad(y, inputs, upstream)
    assert torch.allclose(y, y_ref)
    assert torch.allclose(gx, gx_ref)
    expected_block = gw_ref[out_idx] if in_all else gw_ref[out_idx][:, in_idx]
    assert torch.allclose(gblock, expected_block)
    if bias:
        assert torch.allclose(gb[0], gb_ref)
    if measuring:
        assert torch.allclose(sink.grad, gw_ref.float())
    assert w.grad is None


def test_sink_sums_micro_batches():
    x, w, _, block, out_idx, in_idx, upstream = setup((4,), 6, 5, False)
    sink = GradientSink()
    for half_x, half_up in zip(x.detach().chunk(2), upstream.chunk(2)):
        y = SubnetLinearFunction.apply(half_x, w, None, block, out_idx, in_idx, sink)
        y.backward(half_up)
    _, _, gw_ref, _ = dense(x.detach(), w, None, upstream)
    assert torch.allclose(sink.grad, gw_ref.float())
    assert torch.allclose(block.grad, gw_ref[out_idx][:, in_idx])
    assert sink.take() is not None and sink.grad is None


def test_pro_saves_only_selected_inputs():
    x, w, b, block, out_idx, in_idx, _ = setup((2, 3), 6, 5, True)
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        SubnetLinearFunction.apply(x, w, b, block, out_idx, in_idx, None)
    # One row per token, the selected input neurons only.
    assert (2 * 3, in_idx.numel()) in shapes and (2, 3, 5) not in shapes  # (6, 5) is the weight itself


def test_bf16_backbone_gives_fp32_block_gradient():
    x, w, _, block, out_idx, in_idx, upstream = setup((2, 3), 6, 5, False)
    xb = x.detach().bfloat16().requires_grad_(True)
    block32 = block.detach().float().requires_grad_(True)
    y = SubnetLinearFunction.apply(xb, w.bfloat16(), None, block32, out_idx, in_idx, None)
    y.backward(upstream.bfloat16())
    assert block32.grad.dtype == torch.float32 and xb.grad.dtype == torch.bfloat16
    _, _, gw_ref, _ = dense(x.detach(), w, None, upstream)
    assert torch.allclose(block32.grad.double(), gw_ref[out_idx][:, in_idx], rtol=5e-2, atol=5e-2)
