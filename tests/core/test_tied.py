"""Tied embeddings: the embedding's use of the shared weight trains the output block, in both paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losia_factory.core import LosiaConfig, attach_losia, detach_losia
from losia_factory.core.functional import GradientSink
from losia_factory.core.tied import SubnetEmbeddingFunction
from tests.toy_models import make_toy


@pytest.mark.parametrize("padding_idx", [None, 3])
@pytest.mark.parametrize("measuring", [False, True])
def test_subnet_embedding_gradient_equals_dense_rows(padding_idx, measuring):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 4, generator=gen)
    ids = torch.tensor([[1, 3, 3, 7], [0, 7, 9, 3]])
    out_idx = torch.tensor([1, 3, 7, 8])
    upstream = torch.randn(2, 4, 4, generator=gen)

    dense = weight.clone().requires_grad_(True)
    (F.embedding(ids, dense, padding_idx) * upstream).sum().backward()

    block = dense.detach()[out_idx].clone().requires_grad_(True)
    sink = GradientSink() if measuring else None
    y = SubnetEmbeddingFunction.apply(ids, weight, block, out_idx, sink, padding_idx)
    assert torch.equal(y, F.embedding(ids, weight, padding_idx))
    (y * upstream).sum().backward()
    assert torch.allclose(block.grad, dense.grad[out_idx], atol=1e-6)
    if measuring:
        assert torch.allclose(sink.take(), dense.grad, atol=1e-6)


@pytest.mark.parametrize("pro", [True, False])
def test_tied_embedding_forward_is_installed_and_removed(pro):
    model = make_toy(tie=True, layers=2)
    embed = model.model.embed_tokens
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, output_rank_factor=0.25, pro=pro), lr=1e-2)
    assert "forward" in embed.__dict__
    ids = torch.randint(0, 48, (2, 6), generator=torch.Generator().manual_seed(1))
    model.loss(ids).backward()
    # Rows only the embedding used still get a gradient: the block's gradient is that of the tied weight.
    assert opt.targets[0].block.grad is not None
    detach_losia(model)
    assert "forward" not in embed.__dict__ and model.lm_head.weight is embed.weight
