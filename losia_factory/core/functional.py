"""Autograd functions that route a linear layer's gradient into its trainable subnet block.

Both functions leave the backbone weight ``W`` frozen (no ``.grad`` is ever allocated for it). The block ``P`` is an
ordinary fp32 leaf tensor whose gradient is the slice ``dL/dW[out_idx][:, in_idx]``, so gradient accumulation,
clipping and distributed reduction treat it like any other parameter.

* :class:`SubnetLinearFunction` is LoSiA-Pro (section 3.3.1, Eq. 9): it saves only ``x[..., in_idx]`` and forms the
  block gradient ``dy[..., out_idx]^T @ x[..., in_idx]`` directly.
* :class:`BlockInjectFunction` is the plain reference path: it hands ``W`` to a normal ``F.linear``, lets autograd
  compute the full weight gradient, and slices it as soon as it arrives.

While a layer's group measures importance (its time slot), a :class:`GradientSink` is passed in: it receives the full
weight gradient of every backward pass, summed over micro-batches, for the importance update at the optimizer step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class GradientSink:
    """Sum of the full weight gradients of one layer over the micro-batches of one optimizer step (float32)."""

    __slots__ = ("grad",)

    def __init__(self) -> None:
        self.grad: torch.Tensor | None = None

    def accumulate(self, grad: torch.Tensor) -> None:
        if self.grad is None:
            # The incoming gradient is a fresh tensor nobody else holds, so an fp32 one is kept without a copy.
            self.grad = grad.float()
        else:
            self.grad.add_(grad)

    def take(self) -> torch.Tensor | None:
        """Return the summed gradient and forget it."""
        grad, self.grad = self.grad, None
        return grad


def gather_block(weight: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor | None) -> torch.Tensor:
    """``weight[out_idx][:, in_idx]`` (all input neurons when ``in_idx`` is None)."""
    rows = weight.index_select(0, out_idx)
    return rows if in_idx is None else rows.index_select(1, in_idx)


class SubnetLinearFunction(torch.autograd.Function):
    """LoSiA-Pro linear: ``y = x W^T + b`` with a block-only weight gradient (Eq. 9).

    Inputs: ``x`` (..., in), frozen ``weight`` (out, in), optional ``bias`` (out,), the trainable ``block``
    (n_out, n_in), ``out_idx`` (n_out,), ``in_idx`` (n_in,) or None for all inputs, and a :class:`GradientSink` or
    None. The block is not read in the forward pass: the backbone weight already holds its values (written back after
    every optimizer step); it is an input only so that autograd delivers its gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, block, out_idx, in_idx, sink):
        y = F.linear(x, weight, bias)
        keep_full_input = sink is not None or in_idx is None
        # Gather from a 2-D view: index_select along the last dim of a 3-D tensor is several times slower on CPU,
        # and backward works on (tokens, features) anyway.
        saved_x = x if keep_full_input else x.reshape(-1, x.shape[-1]).index_select(1, in_idx)
        ctx.save_for_backward(saved_x, weight, out_idx, in_idx)
        ctx.sink = sink
        ctx.x_dtype = x.dtype
        ctx.block_dtype = block.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        saved_x, weight, out_idx, in_idx = ctx.saved_tensors
        dtype = grad_out.dtype  # under autocast the forward ran in this dtype
        grad_x = grad_bias = grad_block = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out.matmul(weight.to(dtype)).to(ctx.x_dtype)
        dy = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[2]:
            grad_bias = dy.sum(dim=0)
        if ctx.needs_input_grad[3]:
            x = saved_x.reshape(-1, saved_x.shape[-1]).to(dtype)
            if ctx.sink is not None:
                full = dy.t().mm(x)
                ctx.sink.accumulate(full)
                grad_block = gather_block(full, out_idx, in_idx)
            else:
                # saved_x already holds only the selected input neurons: an (n_out x tokens) @ (tokens x n_in) product
                grad_block = dy.index_select(1, out_idx).t().mm(x)
            grad_block = grad_block.to(ctx.block_dtype)
        return grad_x, None, grad_bias, grad_block, None, None, None


class BlockInjectFunction(torch.autograd.Function):
    """Plain LoSiA: returns ``weight`` unchanged and turns its full gradient into the block gradient.

    Used as ``F.linear(x, BlockInjectFunction.apply(weight, block, out_idx, in_idx, sink), bias)``: autograd computes
    the full ``dL/dW`` as for a trainable weight, this function slices it to the block and drops it at once.
    """

    @staticmethod
    def forward(ctx, weight, block, out_idx, in_idx, sink):
        ctx.save_for_backward(out_idx, in_idx)
        ctx.sink = sink
        ctx.block_dtype = block.dtype
        return weight.view_as(weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_weight):
        out_idx, in_idx = ctx.saved_tensors
        if ctx.sink is not None:
            ctx.sink.accumulate(grad_weight)
        grad_block = gather_block(grad_weight, out_idx, in_idx).to(ctx.block_dtype)
        return None, grad_block, None, None, None
