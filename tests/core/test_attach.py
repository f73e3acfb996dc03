"""attach_losia / detach_losia: what changes on the model and what does not."""

from __future__ import annotations

import pytest
import torch

from losia_factory.core import LosiaConfig, attach_losia, detach_losia
from tests.toy_models import make_batches, make_toy


def test_state_dict_keys_and_requires_grad():
    model = make_toy()
    keys = list(model.state_dict())
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, extra_trainable=("*norm*",)), lr=1e-3)
    assert list(model.state_dict()) == keys
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if not n.endswith("losia_block")} == set(opt.layout.extra_trainable)
    assert all("norm" in n for n in opt.layout.extra_trainable)
    assert len([n for n in trainable if n.endswith("losia_block")]) == 3 * 7 + 1
    counts = opt.num_trainable()
    assert counts["subnet"] == 3 * (4 * 16 * 16 + 3 * 28 * 16) + 6 * 32  # lm_head: floor(48/8) rows
    # Loading a plain state dict back works, strict, despite the hidden blocks.
    model.load_state_dict(model.state_dict(), strict=True)


def test_detach_restores_a_plain_model_with_trained_weights():
    model = make_toy()
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, time_slot=2, mode="fixed"), lr=1e-2)
    for batch in make_batches(3):
        model.loss(batch).backward()
        opt.step()
        opt.zero_grad()
    batch = make_batches(1, seed=9)[0]
    with torch.no_grad():
        attached = model(batch)
    detach_losia(model)
    assert not any("losia" in n for n, _ in model.named_parameters())
    assert not any("losia" in n for n, _ in model.named_buffers())
    assert "forward" not in model.lm_head.__dict__
    with torch.no_grad():
        assert torch.equal(model(batch), attached)
    fresh = make_toy()
    fresh.load_state_dict(model.state_dict())
    assert not torch.equal(fresh.model.layers[0].mlp.up_proj.weight, make_toy().model.layers[0].mlp.up_proj.weight)
    attach_losia(model, LosiaConfig(), lr=1e-3)  # attachable again


def test_attach_errors():
    model = make_toy()
    attach_losia(model, LosiaConfig(), lr=1e-3)
    with pytest.raises(RuntimeError, match="already has LoSiA"):
        attach_losia(model, LosiaConfig(), lr=1e-3)
    with pytest.raises(ValueError, match=r"extra_trainable.*matches no parameter"):
        attach_losia(make_toy(), LosiaConfig(extra_trainable=("*adapter*",)), lr=1e-3)
    with pytest.raises(ValueError, match="extra_trainable matches LoSiA target weights"):
        attach_losia(make_toy(), LosiaConfig(extra_trainable=("*q_proj*",)), lr=1e-3)
    body = torch.nn.Module()
    body.layers = make_toy().model.layers
    with pytest.raises(ValueError, match=r"output_rank_factor > 0 but the model has no"):
        attach_losia(body, LosiaConfig(), lr=1e-3)


def test_same_seed_same_initial_subnets():
    a = attach_losia(make_toy(), LosiaConfig(seed=3), lr=1e-3)
    b = attach_losia(make_toy(), LosiaConfig(seed=3), lr=1e-3)
    c = attach_losia(make_toy(), LosiaConfig(seed=4), lr=1e-3)
    assert all(torch.equal(x.out_idx, y.out_idx) for x, y in zip(a.targets, b.targets))
    assert not all(torch.equal(x.out_idx, y.out_idx) for x, y in zip(a.targets, c.targets))
