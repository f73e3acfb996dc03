"""Importance (Eqs. 3-6) against hand computations."""

from __future__ import annotations

import pytest
import torch

from losia_factory.core import ImportanceEMA, sensitivity


def test_sensitivity_values():
    w = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    g = torch.tensor([[0.5, 4.0], [-2.0, 1.0]])
    # W*G = [[1, -4], [-1, 3]] -> |x - x^2/2| = [[0.5, 12], [1.5, 1.5]]
    assert torch.equal(sensitivity(w, g), torch.tensor([[0.5, 12.0], [1.5, 1.5]]))
    assert torch.equal(sensitivity(w, g, kind="gradient"), g.abs())
    assert sensitivity(w.bfloat16(), g.bfloat16()).dtype == torch.float32


def test_sensitivity_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        sensitivity(torch.ones(2), torch.ones(2), kind="taylor")
    with pytest.raises(ValueError, match="same shape"):
        sensitivity(torch.ones(2), torch.ones(3))


@pytest.mark.parametrize("consume", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_ema_and_uncertainty_against_loop(dtype, tol, consume):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, generator=gen)
    grads = [torch.randn(3, 4, generator=gen) for _ in range(5)]
    b1, b2 = 0.85, 0.7
    ema = ImportanceEMA(w.shape, (b1, b2), "sensitivity", dtype=dtype)
    ibar = torch.zeros(3, 4)
    ubar = torch.zeros(3, 4)
    for g in grads:
        ema.update(w, g.clone(), consume_grad=consume)
        i = (w * g - 0.5 * (w * g) ** 2).abs()
        ibar = b1 * ibar + (1 - b1) * i
        ubar = b2 * ubar + (1 - b2) * (i - ibar).abs()
    assert ema.ibar.dtype == dtype and ema.updates == 5
    assert torch.allclose(ema.score(), ibar * ubar, rtol=tol, atol=tol * 1e-2)
    clone = ImportanceEMA(w.shape, (b1, b2), "sensitivity", dtype=dtype)
    clone.load_state_dict(ema.state_dict())
    assert torch.equal(clone.score(), ema.score())


@pytest.mark.parametrize("consume", [False, True])
def test_gradient_importance_keeps_no_buffers_and_scores_the_latest_gradient(consume):
    """The GL ablation: no Ibar/Ubar (the paper drops them for it); the score is |G| of the last update."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 4, generator=gen)
    grads = [torch.randn(3, 4, generator=gen) for _ in range(3)]
    ema = ImportanceEMA(w.shape, (0.85, 0.85), "gradient")
    assert ema.ibar is None and ema.ubar is None
    with pytest.raises(RuntimeError, match="no update"):
        ema.score()
    for g in grads:
        ema.update(w, g.clone(), consume_grad=consume)
    assert torch.equal(ema.score(), grads[-1].abs()) and ema.updates == 3
    clone = ImportanceEMA(w.shape, (0.85, 0.85), "gradient")
    clone.load_state_dict(ema.state_dict())
    assert torch.equal(clone.score(), ema.score())
