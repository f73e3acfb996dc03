"""LoSiA's state in Trainer checkpoints of FSDP2 runs: a file of its own beside the checkpoint.

Under FSDP the Trainer saves and loads the optimizer through ``torch.distributed.checkpoint``'s optimizer state
dict, which keeps only ``state`` and ``param_groups``: the ``"losia"`` entry of :meth:`LosiaAdamW.state_dict`
(step, indices, fp32 masters, importance buffers, RNG) would be lost. So the callback saves that entry into
``losia_state.pt`` in every checkpoint (rank 0 writes it, atomically, once every rank has taken part in gathering
the sharded masters) and loads it on every rank when a run resumes, after the Trainer has loaded the model, the
optimizer and the scheduler.
"""

from __future__ import annotations

import os

import torch

from ..core import LosiaAdamW
from ..core.sharded import is_sharded
from ..fileio import write_file_atomic

STATE_FILE = "losia_state.pt"


def is_fsdp_sharded(optimizer: LosiaAdamW) -> bool:
    """True when FSDP2 shards the optimizer's blocks (they are ``DTensor`` parameters)."""
    return any(is_sharded(target.block) for target in optimizer.targets)


def save_losia_state(optimizer: LosiaAdamW, folder: str, main_process: bool) -> None:
    """Write ``optimizer.losia_state_dict()`` into ``folder/losia_state.pt``; call it on every rank (a collective)."""
    state = optimizer.losia_state_dict()  # gathers the sharded masters: every rank takes part
    if main_process:
        write_file_atomic(os.path.join(folder, STATE_FILE), lambda path: torch.save(state, path))


def load_losia_state(optimizer: LosiaAdamW, folder: str) -> None:
    """Restore the state saved by :func:`save_losia_state` from checkpoint ``folder``; call it on every rank."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing: an FSDP run keeps LoSiA's state (indices, masters, importance) there, and "
            f"{folder} was not saved by a finetuning_type: losia run under FSDP. Resume from a checkpoint of this "
            "run, or start a new run (overwrite_output_dir: true)."
        )
    device = optimizer.targets[0].out_idx.device
    optimizer.load_losia_state_dict(torch.load(path, map_location=device, weights_only=True))
