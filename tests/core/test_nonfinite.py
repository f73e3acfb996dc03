"""NaN and Inf never reach the trained state: every entry point is injected, the step is skipped whole and counted."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from losia_factory.core import LosiaConfig, LosiaConfigError
from losia_factory.core.nonfinite import NonFiniteStepsError, all_finite
from losia_factory.core.selection import select_block
from tests.core.test_optimizer import build
from tests.spawned import end_worker, free_port
from tests.toy_models import make_batches

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bad", [None, NAN, INF, -INF])
def test_all_finite_agrees_with_a_per_tensor_isfinite(dtype, bad):
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, 7, generator=generator).to(dtype) for _ in range(4)] + [torch.empty(0), None]
    tensors[0][0, 0] = 3e38  # huge but finite, and so is the tensor's sum: a 2-norm would overflow
    if bad is not None:
        tensors[2][4, 6] = bad
    expected = all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)
    assert all_finite(tensors) is expected
    assert expected is (bad is None)


def _snapshot(model, opt) -> dict[str, torch.Tensor]:
    """Every tensor a step may write: model parameters, blocks, Adam state, importance buffers."""
    snap = {f"param {n}": p.detach().clone() for n, p in model.named_parameters()}
    snap.update({f"block {t.name}": t.block.detach().clone() for t in opt.targets})
    for i, state in enumerate(opt.state.values()):
        snap.update({f"adam {i} {k}": torch.as_tensor(v).clone() for k, v in state.items()})
    for name, ema in opt.importance.items():
        snap.update({f"ema {name} {k}": v.clone() for k, v in ema.state_dict().items() if torch.is_tensor(v)})
    return snap


def _assert_unchanged(before, after):
    assert sorted(before) == sorted(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key


def _measuring_target(opt):
    group = opt.schedule.scoring_groups(opt.global_step)[0]
    return opt.group_targets[group][0]


def _inject(kind: str, model, opt, batch):
    """One backward pass with NaN/Inf put in at ``kind``; returns the source name the optimizer must report."""
    loss = model.loss(batch)
    if kind == "loss":
        loss = loss * NAN
    loss.backward()
    target = _measuring_target(opt)
    if kind == "block":
        target.block.grad[0, 0] = NAN
        return f"gradient of {target.name} (block)"
    if kind == "block_inf":
        target.block.grad[-1, -1] = INF
        return f"gradient of {target.name} (block)"
    if kind == "extra":
        opt.param_groups[0]["params"][0].grad[0] = -INF
        return "gradient of extra parameter #0"
    if kind == "importance":
        target.sink.grad[1, 2] = NAN
        return f"importance gradient of {target.name}"
    return f"importance gradient of {target.name}"  # a NaN loss makes every gradient NaN, importance included


@pytest.mark.parametrize("pro", [True, False], ids=["pro", "plain"])
@pytest.mark.parametrize("kind", ["block", "block_inf", "extra", "importance", "loss"])
def test_a_nonfinite_step_writes_nothing_and_is_counted(pro, kind):
    model, opt, sched = build(pro, extra_trainable=("norm",))
    batches = make_batches(8)
    for batch in batches[:4]:  # step 4 is inside a window (T=3) whose EMA already holds step 3
        model.loss(batch).backward()
        opt.step(), sched.step(), opt.zero_grad()
    assert opt.importance and not opt.schedule.is_window_start(4)
    before = _snapshot(model, opt)
    source = _inject(kind, model, opt, batches[4])
    opt.step()
    _assert_unchanged(before, _snapshot(model, opt))
    assert source in opt.last_nonfinite
    assert opt.global_step == 5 and opt.nonfinite.skipped == 1 and opt.nonfinite.consecutive == 1
    sched.step(), opt.zero_grad()
    model.loss(batches[5]).backward()
    opt.step()
    assert opt.last_nonfinite == () and opt.nonfinite.consecutive == 0 and opt.nonfinite.skipped == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(before[f"block {opt.targets[0].name}"], opt.targets[0].block)  # training goes on


def test_a_window_ending_on_a_skipped_step_reselects_from_the_importance_it_has():
    model, opt, sched = build(True)
    batches = make_batches(3)
    for batch in batches[:2]:
        model.loss(batch).backward()
        opt.step(), sched.step(), opt.zero_grad()
    group = opt.schedule.scoring_groups(2)[0]
    assert opt.schedule.reselects_after(2, group)
    expected = {}
    for target in opt.group_targets[group]:
        score = opt.importance[target.name].score()
        if target.num_in is None:
            expected[target.name] = torch.topk(score.sum(dim=1), target.num_out).indices.sort().values
        else:
            expected[target.name] = select_block(score, target.num_out, target.num_in, opt.config.selection)[0]
    _inject("block", model, opt, batches[2])
    opt.step()
    assert opt.last_reselected == (group,) and opt.nonfinite.skipped == 1
    for target in opt.group_targets[group]:
        assert torch.equal(target.out_idx, expected[target.name]), target.name
        # The relocated block took its values from the (unchanged, finite) backbone.
        assert torch.isfinite(target.block).all()


def test_consecutive_skipped_steps_stop_the_run_with_advice():
    model, opt, sched = build(True, max_consecutive_nonfinite_steps=3)
    batches = make_batches(6)
    pattern = ["loss", "loss", None, "loss", "loss"]  # the good step ends the first run of skips
    for kind, batch in zip(pattern, batches):
        if kind is None:
            model.loss(batch).backward()
        else:
            _inject(kind, model, opt, batch)
        opt.step(), sched.step(), opt.zero_grad()
    assert opt.nonfinite.skipped == 4 and opt.nonfinite.consecutive == 2
    _inject("loss", model, opt, batches[5])
    with pytest.raises(NonFiniteStepsError) as info:
        opt.step()
    message = str(info.value)
    assert "3 consecutive optimizer steps (the last: step 6)" in message
    assert "max_consecutive_nonfinite_steps: 3" in message and "learning rate" in message and "bf16" in message


def test_the_count_survives_a_checkpoint():
    model, opt, _ = build(True)
    batches = make_batches(2)
    _inject("block", model, opt, batches[0])
    opt.step(), opt.zero_grad()
    state = opt.state_dict()
    _, opt2, _ = build(True)
    opt2.load_state_dict(state)
    assert opt2.nonfinite.state_dict() == {"skipped": 1, "consecutive": 1}
    del state["losia"]["nonfinite"]  # a state saved before the guard existed
    opt2.load_state_dict(state)
    assert opt2.nonfinite.state_dict() == {"skipped": 0, "consecutive": 0}


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3"])
def test_the_limit_is_validated(value):
    with pytest.raises(LosiaConfigError, match="max_consecutive_nonfinite_steps must be an integer >= 1") as info:
        LosiaConfig(max_consecutive_nonfinite_steps=value)
    assert info.value.field == "max_consecutive_nonfinite_steps"


def _worker(rank: int, port: int, out: str) -> None:
    """Only rank 1 sees a NaN, in its local importance gradient: both ranks must skip the step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, opt, _ = build(True)
        batch = make_batches(1)[0].chunk(2)[rank]
        model.loss(batch).backward()
        for target in opt.targets:  # block gradients agree across ranks, as after DDP's all-reduce
            dist.all_reduce(target.block.grad)
        if rank == 1:
            _measuring_target(opt).sink.grad[0, 0] = NAN
        before = _snapshot(model, opt)
        opt.step()
        unchanged = all(torch.equal(v, _snapshot(model, opt)[k]) for k, v in before.items())
        torch.save(
            {"skipped": opt.nonfinite.skipped, "unchanged": unchanged, "step": opt.global_step}, f"{out}.{rank}"
        )
    finally:
        dist.destroy_process_group()
    end_worker()


def test_every_rank_takes_the_same_decision(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(free_port(), out), nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(f"{out}.{rank}", weights_only=True) == {"skipped": 1, "unchanged": True, "step": 1}
