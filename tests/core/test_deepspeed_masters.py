"""LoSiA under DeepSpeed ZeRO 1-3 (2 processes over gloo, CPU): equal to one process on the global batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.core.test_distributed import BATCH, MICRO, STEPS, WORLD, _same_indices, _single_process
from tests.core.test_optimizer import build
from tests.spawned import end_worker, free_port
from tests.toy_models import make_batches

pytest.importorskip("deepspeed")


def _worker(
    rank: int, port: int, pro: bool, stage: int, bind: bool, out: str, round_robin: bool = False, offload: bool = False
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        import deepspeed

        from losia_factory.core.deepspeed_masters import bind_deepspeed

        model, opt, sched = build(pro, steps=STEPS)
        config = {
            "train_micro_batch_size_per_gpu": BATCH // WORLD // MICRO,
            "gradient_accumulation_steps": MICRO,
            "zero_allow_untested_optimizer": True,
            "zero_optimization": {"stage": stage, "overlap_comm": False, "round_robin_gradients": round_robin},
        }
        if stage == 3:
            # Partition every parameter, blocks included (DeepSpeed's default keeps small ones whole on every rank).
            config["zero_optimization"] = {"stage": 3, "overlap_comm": False, "stage3_param_persistence_threshold": 0}
        if offload:  # fp32 partitions and weight slices in CPU memory, stepped by LoSiA's AdamW (not DeepSpeedCPUAdam)
            config["zero_force_ds_cpu_optimizer"] = False
            config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
            if stage == 3:
                config["zero_optimization"]["offload_param"] = {"device": "cpu"}
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=config)
        try:
            bound = bind_deepspeed(opt) if bind else False
        except RuntimeError as err:
            torch.save({"error": str(err)}, f"{out}.{rank}")
            return
        for batch in make_batches(STEPS, batch=BATCH):
            for chunk in batch.chunk(WORLD)[rank].chunk(MICRO):
                logits = engine(chunk)[:, :-1]
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1)
                )
                engine.backward(loss)  # DeepSpeed divides by the accumulation steps itself
                engine.step()  # steps the optimizer on the last micro-batch only
            if bound:
                opt.finish_step()
        from losia_factory.core.partitioned import full_values, gathered_state_dict

        weights = [w.clone() for w in full_values([model.get_submodule(t.name).weight for t in opt.targets])]
        saved = None
        if stage == 3:
            frozen = [p for p in model.parameters() if not p.requires_grad]
            partitions = [p.ds_tensor.clone() for p in frozen]
            for _ in range(20):  # a save leaves every rank's slices as they were (DeepSpeed's own did not, on gloo)
                saved = gathered_state_dict(model, keep=rank == 0)
            assert all(torch.equal(p.ds_tensor, before) for p, before in zip(frozen, partitions))
        torch.save(
            {
                "bound": bound,
                "weights": weights,
                "saved": saved,
                "targets": [f"{t.name}.weight" for t in opt.targets],
                "indices": [(t.out_idx.clone(), None if t.in_idx is None else t.in_idx.clone()) for t in opt.targets],
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()
    end_worker()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "pro", "offload"),
    [(2, True, False), (2, False, False), (1, True, False), (3, True, False), (3, False, False), (3, True, True)],
    ids=["zero2-pro", "zero2-plain", "zero1", "zero3-pro", "zero3-plain", "zero3-offload"],
)
def test_zero_equals_one_process_on_the_global_batch(tmp_path, stage, pro, offload):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(free_port(), pro, stage, True, out, False, offload), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]
    weights, indices = _single_process(pro)
    assert all(r["bound"] for r in ranks)
    for r in ranks:
        assert _same_indices(r["indices"], indices), "DeepSpeed chose other subnets than one process"
        diff = max((a - b).abs().max().item() for a, b in zip(r["weights"], weights))
        name = f"ZeRO-{stage} {'pro' if pro else 'plain'}{' offload' if offload else ''}"
        print(f"{name}: max |W_zero - W_single| = {diff:.3g}")
        assert diff < 1e-5, diff
    if stage == 3:
        # The model LoSiA saves under ZeRO-3: the base tensor names, whole values, gathered on the saving rank only.
        names = list(build(pro, steps=STEPS)[0].state_dict())
        saved = ranks[0]["saved"]
        assert list(saved) == names and not any("losia" in name for name in names)
        assert ranks[1]["saved"] == {}
        assert all(torch.equal(saved[name], w) for name, w in zip(ranks[0]["targets"], ranks[0]["weights"]))


@pytest.mark.slow
def test_unbound_optimizer_under_zero_goes_wrong(tmp_path):
    """Guards the test above: letting LosiaAdamW reselect on DeepSpeed's flat partitions does not train correctly."""
    out = str(tmp_path / "rank")
    try:
        mp.spawn(_worker, args=(free_port(), True, 2, False, out), nprocs=WORLD, join=True)
    except mp.ProcessRaisedException:
        return  # failing loudly is also acceptable
    weights, _ = _single_process(True)
    rank0 = torch.load(f"{out}.0", weights_only=True)
    assert max((a - b).abs().max().item() for a, b in zip(rank0["weights"], weights)) > 1e-3


@pytest.mark.slow
def test_round_robin_gradients_are_caught_before_training(tmp_path):
    """DeepSpeed's round_robin_gradients breaks its own fp32 accessors; binding must refuse, not train wrongly."""
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(free_port(), True, 2, True, out, True), nprocs=WORLD, join=True)
    errors = [torch.load(f"{out}.{r}", weights_only=True).get("error") for r in range(WORLD)]
    assert all(e is not None and '"round_robin_gradients": true' in e for e in errors), errors


def _write_block_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        import deepspeed

        from losia_factory.core.partitioned import full_shape, full_values, is_partitioned, write_block

        generator = torch.Generator().manual_seed(0)
        # 7 x 5 = 35 entries: rank 0 holds 18, rank 1 holds 17 and a padding entry.
        dense = torch.nn.Linear(5, 7, bias=False)
        dense.weight.data.copy_(torch.randn(7, 5, generator=generator))
        expected = dense.weight.detach().clone()
        with deepspeed.zero.Init(config_dict_or_path={"zero_optimization": {"stage": 3}, "train_batch_size": 2}):
            module = torch.nn.Linear(5, 7, bias=False)
        with deepspeed.zero.GatheredParameters([module.weight], modifier_rank=0):
            module.weight.data.copy_(expected)
        weight = module.weight
        results = {"partitioned": is_partitioned(weight), "shape": tuple(full_shape(weight))}
        for out_idx, in_idx in ((torch.tensor([0, 3, 6]), torch.tensor([1, 4])), (torch.tensor([2, 5]), None)):
            block = torch.randn(out_idx.numel(), 5 if in_idx is None else in_idx.numel(), generator=generator)
            write_block(weight, out_idx, in_idx, block)  # this rank's slice only, no communication
            if in_idx is None:
                expected[out_idx] = block
            else:
                expected[out_idx.unsqueeze(1), in_idx.unsqueeze(0)] = block
        results["weight"] = full_values([weight])[0].clone()
        results["expected"] = expected
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
    end_worker()


@pytest.mark.slow
def test_block_write_into_zero3_partitions_equals_a_dense_write(tmp_path):
    """Each rank writes the block entries inside its own slice; gathered, the weight is the dense write's."""
    out = str(tmp_path / "rank")
    mp.spawn(_write_block_worker, args=(free_port(), out), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        result = torch.load(f"{out}.{rank}", weights_only=True)
        assert result["partitioned"] and result["shape"] == (7, 5)
        assert torch.equal(result["weight"], result["expected"])
