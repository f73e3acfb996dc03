"""Does a ZeRO-3 save leave every rank's weight slices intact? DeepSpeed's consolidation against LoSiA's own.

Two CPU processes (gloo) wrap the test suite's toy model with LoSiA-Pro attached in DeepSpeed ZeRO-3 (every
parameter partitioned), then save it ``--saves`` times with one of the two gathers, comparing every frozen
parameter's local slice (``ds_tensor``) before and after each save and restoring it when it changed:

* ``deepspeed``: ``engine._zero3_consolidated_16bit_state_dict()``, what the Trainer calls under ZeRO-3;
* ``losia``: ``losia_factory.core.partitioned.gathered_state_dict``, what LoSiA runs save with.

    .venv/bin/python scripts/zero3_save_check.py --gather deepspeed --saves 200
    .venv/bin/python scripts/zero3_save_check.py --gather losia --saves 200

Prints, per rank, how many saves changed a slice (docs/distributed.md, "Saving under ZeRO-3").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the toy model lives in the test suite

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from tests.core.test_optimizer import build  # noqa: E402
from tests.spawned import free_port  # noqa: E402

WORLD = 2


def _worker(rank: int, port: int, gather: str, saves: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    import deepspeed

    from losia_factory.core.partitioned import gathered_state_dict

    model, optimizer, scheduler = build(True, steps=4)
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {"stage": 3, "overlap_comm": False, "stage3_param_persistence_threshold": 0},
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    slices = [p.ds_tensor.clone() for p in frozen]
    damaged = 0
    for _ in range(saves):
        if gather == "deepspeed":
            engine._zero3_consolidated_16bit_state_dict()
        else:
            gathered_state_dict(model, keep=rank == 0)
        if any(not torch.equal(p.ds_tensor, before) for p, before in zip(frozen, slices)):
            damaged += 1
            for p, before in zip(frozen, slices):
                p.ds_tensor.copy_(before)
    print(f"rank {rank}, {gather} gather: {damaged} of {saves} saves changed a frozen weight's slice", flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gather", choices=("deepspeed", "losia"), required=True)
    parser.add_argument("--saves", type=int, default=200)
    args = parser.parse_args()
    if args.saves < 1:
        parser.error(f"--saves must be at least 1, got {args.saves}")
    mp.spawn(_worker, args=(free_port(), args.gather, args.saves), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
