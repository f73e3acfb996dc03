"""LosiaAdamW end to end on a tiny LM: both paths against an independent dense reference, accumulation, clipping,
resume, memory, and the ablation modes."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from losia_factory.core import LosiaConfig, LosiaLRScheduler, attach_losia
from tests.core.reference import DenseReference, constant_after_warmup, max_abs_diff
from tests.toy_models import make_batches, make_toy

LR, WARMUP, SLOT = 1e-2, 2, 3


def build(pro: bool, *, bias=False, tie=False, layers=3, steps=24, **cfg):
    model = make_toy(bias=bias, tie=tie, layers=layers)
    base = dict(rank_factor=0.5, time_slot=SLOT, output_rank_factor=0.25, pro=pro)
    base.update(cfg)
    opt = attach_losia(model, LosiaConfig(**base), lr=LR, weight_decay=0.01)
    sched = LosiaLRScheduler(opt, num_training_steps=steps, warmup_steps=WARMUP, kind="constant")
    return model, opt, sched


def train(model, opt, sched, batches, micro=1, clip=None):
    losses = []
    for batch in batches:
        total = 0.0
        for chunk in batch.chunk(micro):
            loss = model.loss(chunk) / micro
            loss.backward()
            total += loss.item()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total)
    return losses


def target_weights(model, opt):
    return [model.get_submodule(t.name).weight.detach().clone() for t in opt.targets]


def check_against_reference(*, kind="sensitivity", bias=False, tie=False, adam_reset="moments", output_rank=0.25):
    """Train Pro, plain and the dense reference on the same batches; all three must agree."""
    steps = 4 * (3 + 1) * SLOT // 2 + 1  # well past the first reselection of every group (incl. the output layer)
    batches = make_batches(steps)
    results = {}
    cfg = dict(importance=kind, adam_reset=adam_reset, output_rank_factor=output_rank)
    for pro in (True, False):
        model, opt, sched = build(pro, bias=bias, tie=tie, steps=steps, **cfg)
        if pro:
            init = [
                (
                    t.name,
                    t.group,
                    t.num_out,
                    t.num_in,
                    t.out_idx.clone(),
                    None if t.in_idx is None else t.in_idx.clone(),
                )
                for t in opt.targets
            ]
            if output_rank >= 1.0:  # the dense output layer: plain AdamW on the whole weight
                n_out = model.lm_head.weight.shape[0]
                init.append(("lm_head", None, n_out, None, torch.arange(n_out), None))
            groups = opt.schedule.num_groups
        train(model, opt, sched, batches)
        results[pro] = (
            [model.get_submodule(t[0]).weight.detach().clone() for t in init],
            [t.out_idx.clone() for t in opt.targets],
        )

    ref_model = make_toy(bias=bias, tie=tie)
    ref = DenseReference(
        ref_model,
        init,
        groups=groups,
        slot=SLOT,
        warmup=WARMUP,
        lr_at=constant_after_warmup(LR, WARMUP),
        weight_decay=0.01,
        kind=kind,
        adam_reset=adam_reset,
    )
    for batch in batches:
        ref.step(lambda m, b=batch: m.loss(b).backward())
    ref_weights = [ref_model.get_submodule(t[0]).weight.detach() for t in init]
    ref_out = [t["out"] for t in ref.targets if t["group"] is not None]

    # Reselection really happened and picked the same neurons everywhere.
    assert any(not torch.equal(a[4], b) for a, b in zip(init, ref_out))
    for pro in (True, False):
        assert all(torch.equal(a, b) for a, b in zip(results[pro][1], ref_out))
    assert max_abs_diff(results[True][0], results[False][0]) < 1e-6
    assert max_abs_diff(results[True][0], ref_weights) < 1e-6
    assert max_abs_diff(results[False][0], ref_weights) < 1e-6
    # The weights did move, by about lr per step.
    original = make_toy(bias=bias, tie=tie)
    moved = max_abs_diff(results[True][0], [original.get_submodule(t[0]).weight for t in init])
    assert moved > 10 * LR


@pytest.mark.parametrize("kind", ["sensitivity", "gradient"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("adam_reset", ["moments", "state"])
def test_pro_and_plain_match_dense_reference(kind, bias, adam_reset):
    check_against_reference(kind=kind, bias=bias, adam_reset=adam_reset)


@pytest.mark.parametrize("output_rank", [0.25, 1.0])
def test_tied_output_layer_matches_dense_reference(output_rank):
    """The tied weight's block (or, at p_o = 1, the whole weight) gets the gradient of both of its uses."""
    check_against_reference(tie=True, output_rank=output_rank)


def test_dense_output_layer_matches_dense_reference():
    check_against_reference(output_rank=1.0)


def test_only_blocks_change_within_a_window():
    model, opt, sched = build(True, mode="fixed")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    train(model, opt, sched, make_batches(4))
    for t in opt.targets:
        w = model.get_submodule(t.name).weight.detach()
        changed = (w != before[t.name + ".weight"]).nonzero()
        assert set(changed[:, 0].tolist()) <= set(t.out_idx.tolist())
        if t.in_idx is not None:
            assert set(changed[:, 1].tolist()) <= set(t.in_idx.tolist())
        assert changed.shape[0] > 0.9 * t.block.numel()
    frozen = [n for n in before if not any(n == t.name + ".weight" for t in opt.targets)]
    for name in frozen:
        assert torch.equal(before[name], model.state_dict()[name]), name


@pytest.mark.parametrize("pro", [True, False])
def test_gradient_accumulation_equals_full_batch(pro):
    batches = make_batches(3 * 4 * SLOT + 2, batch=4)
    runs = []
    for micro in (1, 2):
        model, opt, sched = build(pro)
        train(model, opt, sched, batches, micro=micro)
        runs.append((target_weights(model, opt), [t.out_idx.clone() for t in opt.targets]))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert max_abs_diff(runs[0][0], runs[1][0]) < 1e-6


def test_clipping_sees_and_scales_block_gradients():
    model, opt, _ = build(True)
    model.loss(make_batches(1)[0]).backward()
    blocks = [t.block for t in opt.targets]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b.grad) for b in blocks]))
    before = [b.grad.clone() for b in blocks]
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=norm.item() / 4)
    assert torch.isclose(total, norm)
    for b, g in zip(blocks, before):
        assert torch.allclose(b.grad, g / 4, rtol=1e-5)


def _save(model, opt, sched, path):
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, path)


@pytest.mark.parametrize("pro", [True, False])
def test_resume_equals_uninterrupted(tmp_path, pro):
    total, cut = 4 * 4 * SLOT, 4 * SLOT + 1  # cut inside a measuring window, before several reselections
    batches = make_batches(total)
    model, opt, sched = build(pro, steps=total)
    train(model, opt, sched, batches)
    reference = target_weights(model, opt)

    model, opt, sched = build(pro, steps=total)
    train(model, opt, sched, batches[:cut])
    assert opt.importance, "the cut should fall inside a window so EMA buffers are saved"
    _save(model, opt, sched, tmp_path / "ckpt.pt")
    del model, opt, sched

    model, opt, sched = build(pro, steps=total)
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # checkpoints must load with weights_only
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    train(model, opt, sched, batches[cut:])
    assert max_abs_diff(reference, target_weights(model, opt)) == 0.0


def test_resume_in_a_new_process(tmp_path):
    total, cut = 3 * 4 * SLOT, 2 * SLOT + 1
    batches = make_batches(total)
    model, opt, sched = build(True, steps=total)
    train(model, opt, sched, batches)
    torch.save(target_weights(model, opt), tmp_path / "reference.pt")
    model, opt, sched = build(True, steps=total)
    train(model, opt, sched, batches[:cut])
    _save(model, opt, sched, tmp_path / "ckpt.pt")
    script = textwrap.dedent(f"""
        import torch
        from tests.core.test_optimizer import build, train, target_weights
        from tests.toy_models import make_batches
        model, opt, sched = build(True, steps={total})
        state = torch.load({str(tmp_path / "ckpt.pt")!r}, weights_only=False)
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"]); sched.load_state_dict(state["sched"])
        train(model, opt, sched, make_batches({total})[{cut}:])
        ref = torch.load({str(tmp_path / "reference.pt")!r})
        print(max((a - b).abs().max().item() for a, b in zip(ref, target_weights(model, opt))))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) == 0.0


def test_load_state_dict_rejects_another_layout():
    _, opt, _ = build(True)
    state = opt.state_dict()
    _, other, _ = build(True, rank_factor=0.25)
    with pytest.raises(ValueError, match="rank factors differ"):
        other.load_state_dict(copy.deepcopy(state))
    _, other, _ = build(True, output_rank_factor=0.0)
    with pytest.raises(ValueError, match="different layers"):
        other.load_state_dict(copy.deepcopy(state))
    with pytest.raises(ValueError, match="no 'losia' entry"):
        opt.load_state_dict(torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))]).state_dict())


def test_pro_keeps_no_full_gradients_and_saves_partial_inputs():
    model, opt, _ = build(True, layers=3)
    measuring = {t.name for t in opt.targets if t.group == 0}
    saved = []

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(make_batches(1)[0])
    loss.backward()
    for t in opt.targets:
        weight = model.get_submodule(t.name).weight
        assert weight.grad is None and not weight.requires_grad
        assert t.block.grad is not None and t.block.grad.shape == t.block.shape
        if t.name in measuring:
            assert t.sink.grad is not None and t.sink.grad.shape == weight.shape
        else:
            assert t.sink is None
    # Non-measuring inner targets saved activations of n_in = in_features / 2 features only, one row per token.
    dim, hidden = 32, 56
    assert (4 * 12, dim // 2) in saved and (4 * 12, hidden // 2) in saved
    opt.step()
    opt.zero_grad()
    assert all(t.sink is None or t.sink.grad is None for t in opt.targets)


def test_tied_output_layer_trains_shared_rows_only():
    model, opt, sched = build(True, tie=True)
    out = opt.targets[0]
    assert out.name == "lm_head" and out.in_idx is None
    before = model.model.embed_tokens.weight.detach().clone()
    train(model, opt, sched, make_batches(2))
    after = model.model.embed_tokens.weight.detach()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    changed_rows = (after != before).any(dim=1).nonzero().squeeze(1)
    assert set(changed_rows.tolist()) == set(out.out_idx.tolist())


def test_seek_places_the_optimizer_in_a_slot():
    model, opt, _ = build(True, layers=3)  # groups: lm_head (0), then the three decoder layers
    step = 2 * SLOT + SLOT - 2  # second-to-last step of group 2's slot
    opt.seek(step)
    assert opt.global_step == step and not opt.importance
    assert {t.group for t in opt.targets if t.sink is not None} == {2} == set(opt.schedule.scoring_groups(step))
    batches = make_batches(2)
    for expected_reselected in ((), (2,)):
        before = {t.name: t.out_idx.clone() for t in opt.targets}
        model.loss(batches[len(expected_reselected)]).backward()
        opt.step()
        opt.zero_grad()
        assert opt.last_reselected == expected_reselected
    moved = {t.group for t in opt.targets if not torch.equal(t.out_idx, before[t.name])}
    assert moved <= {2} and opt.global_step == 3 * SLOT
    assert {t.group for t in opt.targets if t.sink is not None} == {3}
    opt.seek(0)
    assert {t.group for t in opt.targets if t.sink is not None} == {0} and not opt.importance
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="step must be an integer"):
            opt.seek(bad)


@pytest.mark.parametrize("mode", ["sync", "once", "fixed"])
def test_ablation_modes_reselect_as_scheduled(mode):
    groups = 4
    model, opt, sched = build(True, mode=mode)
    history = []
    for batch in make_batches(3 * groups * SLOT):
        before = [t.out_idx.clone() for t in opt.targets]
        model.loss(batch).backward()
        step = opt.global_step
        opt.step()
        sched.step()
        opt.zero_grad()
        moved = {t.group for t, b in zip(opt.targets, before) if not torch.equal(t.out_idx, b)}
        history.append((step, moved))
    expected = {s: {g for g in range(groups) if opt.schedule.reselects_after(s, g)} for s, _ in history}
    for step, moved in history:
        assert moved <= expected[step], (step, moved)
    reselect_steps = [s for s, gs in expected.items() if gs]
    if mode == "fixed":
        assert not reselect_steps
    elif mode == "sync":
        assert all(expected[s] == set(range(groups)) for s in reselect_steps)
        assert reselect_steps == [SLOT - 1, groups * SLOT + SLOT - 1, 2 * groups * SLOT + SLOT - 1]
    else:
        assert reselect_steps == [(g + 1) * SLOT - 1 for g in range(groups)]
    # Something did move when a reselection was due.
    assert mode == "fixed" or any(moved for _, moved in history)


def test_warns_without_rewarm_scheduler():
    model = make_toy()
    opt = attach_losia(model, LosiaConfig(rank_factor=0.5, time_slot=2), lr=1e-3)
    model.loss(make_batches(1)[0]).backward()
    with pytest.warns(UserWarning, match="not rewarmed"):
        opt.step()


def test_loading_weights_resyncs_masters_before_optimizer_state():
    """The resume order of transformers: fresh model + LoSiA, load checkpoint weights, an optimizer state round trip
    (accelerate does one to move it to the device), then the saved optimizer state. No stale master may leak."""
    batches = make_batches(2 * SLOT + 1)
    model, opt, sched = build(True)
    train(model, opt, sched, batches)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    saved = copy.deepcopy(opt.state_dict())

    model, opt, _ = build(True)
    model.load_state_dict(trained)
    opt.load_state_dict(opt.state_dict())  # the round trip: live references of the fresh optimizer
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    opt.load_state_dict(saved)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(t.out_idx, s["out_idx"]) for t, s in zip(opt.targets, saved["losia"]["targets"]))
