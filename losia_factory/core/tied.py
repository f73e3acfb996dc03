"""An input embedding that shares its weight with a subnet-trained output layer (tied embeddings).

A tied weight is used twice, as the output layer and as the input embedding, and its gradient is the sum of both
uses. The output layer's block and importance would see only the first term, so the embedding's forward is replaced
as well: its gradient for the selected output neurons (vocabulary rows) flows into the same block, and while the
output layer measures importance, its full gradient goes into the same sink. Training then matches dense training of
the tied weight restricted to the block.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .functional import BlockInjectFunction, GradientSink

_OUTPUT = "_losia_tied_output"


def find_tied_embedding(model: nn.Module, output: nn.Linear) -> nn.Embedding | None:
    """The ``nn.Embedding`` of ``model`` whose weight is the output layer's weight, or None."""
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.weight is output.weight:
            return module
    return None


class SubnetEmbeddingFunction(torch.autograd.Function):
    """Embedding lookup whose weight gradient is formed only for the block's rows (LoSiA-Pro).

    Inputs: ``ids`` (integer tensor), frozen ``weight`` (vocab, dim), the output layer's ``block`` (n_out, dim),
    ``out_idx`` (n_out,), a :class:`~.functional.GradientSink` or None, and the embedding's ``padding_idx``, whose
    row gets no gradient (as in ``F.embedding``).
    """

    @staticmethod
    def forward(ctx, ids, weight, block, out_idx, sink, padding_idx):
        ctx.save_for_backward(ids, out_idx)
        ctx.sink, ctx.padding_idx, ctx.vocab, ctx.block_dtype = sink, padding_idx, weight.shape[0], block.dtype
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        ids, out_idx = ctx.saved_tensors
        flat_ids = ids.reshape(-1)
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.padding_idx is not None:
            keep = flat_ids != ctx.padding_idx
            flat_ids, grad = flat_ids[keep], grad[keep]
        if ctx.sink is not None:
            full = torch.zeros((ctx.vocab, grad.shape[1]), dtype=torch.float32, device=grad.device)
            full.index_add_(0, flat_ids, grad.float())
            grad_block = full.index_select(0, out_idx)
            ctx.sink.accumulate(full)
        else:
            # Position of every vocabulary row inside the block (-1: not selected); only selected tokens contribute.
            position = torch.full((ctx.vocab,), -1, dtype=torch.long, device=grad.device)
            position[out_idx] = torch.arange(out_idx.numel(), device=grad.device)
            rows = position[flat_ids]
            hit = rows >= 0
            grad_block = torch.zeros((out_idx.numel(), grad.shape[1]), dtype=torch.float32, device=grad.device)
            grad_block.index_add_(0, rows[hit], grad[hit].float())
        return None, None, grad_block.to(ctx.block_dtype), None, None, None


def _pro_forward(self: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    output = self.__dict__[_OUTPUT]
    if not torch.is_grad_enabled():
        return F.embedding(ids, self.weight, self.padding_idx)
    return SubnetEmbeddingFunction.apply(
        ids, self.weight, output.losia_block, output.losia_out_idx, output._losia_sink, self.padding_idx
    )


def _plain_forward(self: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    output = self.__dict__[_OUTPUT]
    if not torch.is_grad_enabled():
        return F.embedding(ids, self.weight, self.padding_idx)
    sink: GradientSink | None = output._losia_sink
    weight = BlockInjectFunction.apply(self.weight, output.losia_block, output.losia_out_idx, None, sink)
    return F.embedding(ids, weight, self.padding_idx)


class TiedEmbedding:
    """Routes a tied embedding's gradient into the output layer's block (see the module docstring).

    Args:
        embedding: The input embedding sharing the weight.
        output: The output ``nn.Linear``, already carrying its LoSiA block (its block, indices and sink are read
            at every forward, so reselection needs nothing here).
        pro: LoSiA-Pro (gradient of the selected rows only) or the plain reference path (full gradient, sliced).
    """

    def __init__(self, embedding: nn.Embedding, output: nn.Linear, pro: bool) -> None:
        if embedding.max_norm is not None or embedding.scale_grad_by_freq or embedding.sparse:
            raise ValueError(
                "The tied input embedding uses max_norm, scale_grad_by_freq or sparse gradients, which LoSiA's "
                "output-layer block does not support; set output_rank_factor to 0 or 1."
            )
        self.embedding = embedding
        embedding.__dict__[_OUTPUT] = output
        # Replaces the bound method of this one module only (the class keeps its own forward).
        embedding.forward = types.MethodType(  # type: ignore[method-assign]
            _pro_forward if pro else _plain_forward, embedding
        )

    def remove(self) -> None:
        """Give the embedding its own forward back."""
        self.embedding.__dict__.pop("forward", None)
        self.embedding.__dict__.pop(_OUTPUT, None)
