"""attach_losia / detach_losia: what changes on the model and what does not."""

from __future__ import annotations

import pytest
import torch

from losia_factory.core import LosiaConfig, attach_losia, detach_losia, find_attachment
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


@pytest.mark.parametrize("order", ["first", "last"])
def test_output_order_places_the_output_group(order):
    model = make_toy(layers=3)
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, output_rank_factor=0.25, output_order=order), lr=1e-2)
    names = [opt.group_name(g) for g in range(opt.schedule.num_groups)]
    decoder = [f"model.layers.{i}" for i in range(3)]
    assert names == (["lm_head", *decoder] if order == "first" else [*decoder, "lm_head"])
    # Both orders start from the same random subnets.
    other = make_toy(layers=3)
    flipped = "last" if order == "first" else "first"
    other_opt = attach_losia(other, LosiaConfig(rank_factor=0.5, output_rank_factor=0.25, output_order=flipped), lr=1)
    by_name = {t.name: t.out_idx for t in other_opt.targets}
    assert all(torch.equal(t.out_idx, by_name[t.name]) for t in opt.targets)


def test_full_output_rank_trains_the_output_layer_densely():
    """p_o = 1 leaves nothing to localize: lm_head becomes a plain trainable weight on the base schedule."""
    model = make_toy(layers=2)
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, output_rank_factor=1.0), lr=1e-2)
    assert opt.schedule.num_groups == 2 and all(t.name != "lm_head" for t in opt.targets)
    assert model.lm_head.weight.requires_grad and not hasattr(model.lm_head, "losia_block")
    assert opt.param_groups[0]["params"] == [model.lm_head.weight]
    assert opt.layout.output_layer is None and opt.layout.extra_trainable == ("lm_head.weight",)


class _FixedScore:
    """Stands in for an importance buffer: its score grows with the row index."""

    def __init__(self, shape):
        self.shape = shape

    def score(self):
        return torch.arange(self.shape[0] * self.shape[1], dtype=torch.float32).reshape(self.shape)


def test_optimizer_declares_its_layout_and_reselects_through_the_public_method():
    model = make_toy()
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, time_slot=2, output_rank_factor=0.25), lr=1e-2)
    assert opt.layout is find_attachment(model).layout
    target = opt.group_targets[1][0]
    rows = target.weight.shape[0]
    opt.importance[target.name] = _FixedScore(tuple(target.weight.shape))
    opt.reselect(1)
    assert sorted(target.out_idx.tolist()) == list(range(rows - target.num_out, rows))  # the highest-scoring rows
    assert torch.equal(target.block.detach(), target.weight.detach()[target.out_idx][:, target.in_idx])
    assert target.name not in opt.importance
