"""Data-parallel LoSiA (DDP over gloo, 2 processes) equals one process on the global batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from losia_factory.core import distributed as losia_distributed
from tests.core.test_optimizer import build, target_weights
from tests.spawned import end_worker, free_port
from tests.toy_models import make_batches

WORLD, MICRO, BATCH = 2, 2, 4
STEPS = 3 * 4 * 3 + 2  # three full cycles of 4 groups x T=3, then two more steps: every group reselects 3 times


def _losses_per_step(model, opt, sched, batches, micro, ddp=None, probe=None):
    """Train with ``micro`` micro-batches per step; under DDP, gradients are reduced on the last one only.

    ``probe(step, micro_index)`` runs after each backward pass.
    """
    forward = ddp or model
    for step, batch in enumerate(batches):
        for i, chunk in enumerate(batch.chunk(micro)):
            sync = ddp is None or i == micro - 1
            context = ddp.no_sync() if not sync else _nullcontext()
            with context:
                logits = forward(chunk)[:, :-1]
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1)
                )
                (loss / micro).backward()
            if probe is not None:
                probe(step, i)
        opt.step()
        sched.step()
        opt.zero_grad()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _worker(rank: int, port: int, pro: bool, average: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        if not average:  # what happens without the importance all-reduce: the check must catch it
            losia_distributed.average_across_ranks = lambda tensors: None
            import losia_factory.core.optimizer as optimizer_module

            optimizer_module.average_across_ranks = losia_distributed.average_across_ranks
        model, opt, sched = build(pro, steps=STEPS)
        ddp = DistributedDataParallel(model)
        local = [b.chunk(WORLD)[rank] for b in make_batches(STEPS, batch=BATCH)]
        same_grads = {}

        def probe(step: int, micro_index: int) -> None:
            # Are the block gradients (LoSiA-Pro's custom Function included) identical on both ranks right now?
            if step == 0:
                flat = torch.cat([t.block.grad.reshape(-1) for t in opt.targets])
                gathered = [torch.empty_like(flat) for _ in range(WORLD)]
                dist.all_gather(gathered, flat)
                same_grads[micro_index] = torch.equal(gathered[0], gathered[1])

        error = None
        try:
            _losses_per_step(model, opt, sched, local, MICRO, ddp=ddp, probe=probe)
        except RuntimeError as err:
            error = str(err)
        torch.save(
            {
                "weights": target_weights(model, opt),
                "indices": [(t.out_idx.clone(), None if t.in_idx is None else t.in_idx.clone()) for t in opt.targets],
                "error": error,
                "same_grads": same_grads,
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()
    end_worker()


def _single_process(pro: bool):
    model, opt, sched = build(pro, steps=STEPS)
    _losses_per_step(model, opt, sched, make_batches(STEPS, batch=BATCH), MICRO)
    indices = [(t.out_idx.clone(), None if t.in_idx is None else t.in_idx.clone()) for t in opt.targets]
    return target_weights(model, opt), indices


def _same_indices(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and (x[1] is None or torch.equal(x[1], y[1])) for x, y in zip(a, b))


@pytest.mark.parametrize("pro", [True, False], ids=["pro", "plain"])
def test_ddp_equals_one_process_on_the_global_batch(tmp_path, pro):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(free_port(), pro, True, out), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]
    weights, indices = _single_process(pro)
    assert all(r["error"] is None for r in ranks), ranks[0]["error"]
    # Local (different) block gradients under no_sync, reduced (identical) after the last micro-batch.
    assert ranks[0]["same_grads"] == {0: False, MICRO - 1: True}
    assert _same_indices(ranks[0]["indices"], ranks[1]["indices"])
    assert _same_indices(ranks[0]["indices"], indices), "the distributed run chose other subnets"
    for r in ranks:
        diff = max((a - b).abs().max().item() for a, b in zip(r["weights"], weights))
        print(f"max |W_ddp - W_single| = {diff:.3g}")
        assert diff < 1e-5, diff  # fp32 reduction-order noise only; another subnet would differ by ~lr (1e-2)


def test_without_averaged_importance_the_ranks_disagree_and_training_stops(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(free_port(), True, False, out), nprocs=WORLD, join=True)
    errors = [torch.load(f"{out}.{r}", weights_only=True)["error"] for r in range(WORLD)]
    assert all(e is not None and "subnets differ across ranks" in e for e in errors), errors
