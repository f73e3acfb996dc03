"""FSDP2-sharded tensors (DTensor, Shard(0)) on 2 gloo processes: whole values and row-local writes.

Each check compares the sharded tensor, gathered afterwards, with the same operation on a plain tensor. Row counts
that do not split evenly (7 rows: 4 + 3) and a tensor with fewer rows than ranks (1 row: rank 1 holds none) cover
torch.chunk's split that :func:`~losia_factory.core.sharded.local_rows` assumes.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from losia_factory.core import partitioned, sharded
from tests.spawned import end_worker, free_port

WORLD = 2


def _reference_write(weight, out_idx, in_idx, block):
    weight = weight.clone()
    if in_idx is None:
        weight[out_idx] = block
    else:
        weight[out_idx.unsqueeze(1), in_idx.unsqueeze(0)] = block
    return weight


def _worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    generator = torch.Generator().manual_seed(0)
    results = {}
    for rows in (7, 1):
        full = torch.randn(rows, 5, generator=generator)
        weight = distribute_tensor(full.clone(), mesh, [Shard(0)])
        out_idx = torch.tensor([0, rows - 1]).unique()
        in_idx = torch.tensor([1, 3])
        block = torch.randn(out_idx.numel(), 2, generator=generator)
        whole_rows = torch.randn(out_idx.numel(), 5, generator=generator)
        plain = torch.randn(3, 3, generator=generator)
        gathered, same_plain = partitioned.full_values([weight, plain])
        results[f"{rows}/full_values"] = (gathered, full, same_plain, plain)
        partitioned.write_block(weight, out_idx, in_idx, block)
        expected = _reference_write(full, out_idx, in_idx, block)
        results[f"{rows}/write_block"] = (weight.full_tensor(), expected)
        partitioned.write_block(weight, out_idx, None, whole_rows)
        expected = _reference_write(expected, out_idx, None, whole_rows)
        results[f"{rows}/write_rows"] = (weight.full_tensor(), expected)
        new_value = torch.randn(rows, 5, generator=generator)
        partitioned.assign(weight, new_value)
        results[f"{rows}/assign"] = (weight.full_tensor(), new_value)
    replicated = distribute_tensor(torch.zeros(4, 2), mesh, [Replicate()])
    try:
        sharded.write_block(replicated, torch.tensor([0]), None, torch.ones(1, 2))
        results["replicate_refused"] = ""
    except ValueError as err:
        results["replicate_refused"] = str(err)
    results["is_sharded"] = (sharded.is_sharded(replicated), sharded.is_sharded(torch.zeros(1)))
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()
    end_worker()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sharded") / "results.pt")
    mp.spawn(_worker, args=(free_port(), out), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("rows", [7, 1])
def test_full_values_gathers_sharded_tensors_and_passes_plain_ones(results, rows):
    gathered, full, same_plain, plain = results[f"{rows}/full_values"]
    assert torch.equal(gathered, full) and torch.equal(same_plain, plain)


@pytest.mark.parametrize("rows", [7, 1])
@pytest.mark.parametrize("write", ["write_block", "write_rows", "assign"])
def test_row_local_writes_equal_the_write_on_the_whole_tensor(results, rows, write):
    written, expected = results[f"{rows}/{write}"]
    assert torch.equal(written, expected)


def test_only_row_sharded_tensors_are_written(results):
    assert "Shard(0)" in results["replicate_refused"]
    assert results["is_sharded"] == (True, False)
