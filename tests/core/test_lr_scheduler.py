"""LosiaLRScheduler: base curves equal transformers' schedules; rewarm applied per group."""

from __future__ import annotations

import pytest
import torch

from losia_factory.core import LosiaConfig, LosiaLRScheduler, attach_losia, base_lr_lambda
from tests.toy_models import make_batches, make_toy


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_base_curves_match_transformers(kind):
    transformers = pytest.importorskip("transformers")
    total, warmup = 37, 5
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    hf = {
        "cosine": transformers.get_cosine_schedule_with_warmup,
        "linear": transformers.get_linear_schedule_with_warmup,
        "constant": lambda o, w, t: transformers.get_constant_schedule_with_warmup(o, w),
    }[kind](opt, warmup, total)
    ours = base_lr_lambda(kind, total, warmup)
    for step in range(total):
        assert ours(step) == pytest.approx(hf.get_last_lr()[0], abs=1e-12), step
        opt.step()
        hf.step()


def test_min_lr_ratio_floor():
    f = base_lr_lambda("cosine", 10, 0, min_lr_ratio=0.1)
    assert f(0) == 1.0 and f(10) == pytest.approx(0.1) and f(20) == pytest.approx(0.1)


def test_group_lrs_are_base_times_rewarm():
    model = make_toy(layers=2)
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, time_slot=2, extra_trainable=("*norm*",)), lr=0.1)
    sched = LosiaLRScheduler(opt, num_training_steps=20, warmup_steps=3, kind="linear")
    base = base_lr_lambda("linear", 20, 3)
    for step, batch in enumerate(make_batches(14)):
        for group in opt.param_groups:
            g = group["losia_group"]
            rewarm = 1.0 if g is None else sched.rewarm.rewarm_factor(step, g)
            assert group["lr"] == pytest.approx(0.1 * base(step) * rewarm)
        model.loss(batch).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    assert [g["name"] for g in opt.param_groups] == ["extra", "lm_head", "model.layers.0", "model.layers.1"]
    assert sched.rewarm.warmup_steps == 3 and opt.global_step == sched.last_epoch


def test_state_dict_round_trip(tmp_path):
    model = make_toy(layers=2)
    opt = attach_losia(model, LosiaConfig(time_slot=2), lr=0.1)
    sched = LosiaLRScheduler(opt, num_training_steps=20, warmup_steps=3)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert "lr_lambda" not in state and "optimizer" not in state
    torch.save(state, tmp_path / "sched.pt")
    state = torch.load(tmp_path / "sched.pt", weights_only=True)  # as transformers loads checkpoints
    other = LosiaLRScheduler(opt, num_training_steps=20, warmup_steps=3)
    other.load_state_dict(state)
    assert other.last_epoch == 5 and other.get_lr() == sched.get_lr()


def test_needs_losia_optimizer():
    with pytest.raises(TypeError, match="LosiaAdamW"):
        LosiaLRScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), num_training_steps=3)
    with pytest.raises(ValueError, match="kind"):
        base_lr_lambda("polynomial", 10)
    with pytest.raises(ValueError, match="warmup_steps"):
        base_lr_lambda("cosine", 10, 11)


def test_without_rewarm_every_group_follows_the_base_curve():
    model = make_toy(layers=2)
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, time_slot=2, rewarm=False), lr=0.1)
    sched = LosiaLRScheduler(opt, num_training_steps=20, warmup_steps=3, kind="linear")
    base = base_lr_lambda("linear", 20, 3)
    reselections = 0
    for step, batch in enumerate(make_batches(14)):
        assert [group["lr"] for group in opt.param_groups] == pytest.approx([0.1 * base(step)] * len(opt.param_groups))
        reselections += sum(sched.rewarm.reselects_after(step, g) for g in range(len(opt.group_targets)))
        model.loss(batch).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    assert reselections > 0
