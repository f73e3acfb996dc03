"""Which Trainer checkpoints are complete: a run killed while saving must not be resumed from a half-written folder.

transformers 5.6 writes ``checkpoint-N`` in place (no temporary folder): the model (through the method's own saver
for LoSiA / PiLoRA), then ``optimizer.pt`` and ``scheduler.pt``, then each rank's RNG state, then
``trainer_state.json``; the ``on_save`` callbacks run after that (LoSiA writes ``losia_config.json`` there). And
``get_last_checkpoint`` picks the highest-numbered folder whatever it holds. So a folder is complete when its
``trainer_state.json`` parses, every rank's RNG file is there, and the method's own files (``checkpoint_files`` of
its description, written last or before ``trainer_state.json``) are there; anything else is a save that a kill cut
short. A SIGKILL loses no data a process already handed to the kernel, so a file that exists was fully written up to
where the process stopped, and the files written after it do not exist.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_problems(
    folder: str | os.PathLike[str], world_size: int = 1, required: Sequence[str] = (), optimizer_saved: bool = True
) -> list[str]:
    """What is missing or broken in a Trainer checkpoint folder (an empty list for a complete one).

    Args:
        folder: The ``checkpoint-N`` folder.
        world_size: Processes of the run that will resume (each saved its own RNG state).
        required: The method's own files.
        optimizer_saved: False with ``save_only_model``, where the Trainer writes no optimizer or RNG files.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return [f"{folder} is not a folder"]
    problems = []
    state = os.path.join(folder, TRAINER_STATE)
    if not os.path.isfile(state):
        problems.append(f"{TRAINER_STATE} is missing (the Trainer writes it last)")
    else:
        try:
            with open(state, encoding="utf-8") as handle:
                json.load(handle)
        except (OSError, ValueError) as err:
            problems.append(f"{TRAINER_STATE} is unreadable ({err})")
    if optimizer_saved:
        # Every rank saves its own RNG file, with no barrier before rank 0 writes trainer_state.json.
        if world_size > 1:
            names = [f"rng_state_{rank}.pth" for rank in range(world_size)]
            problems += [f"{name} is missing" for name in names if not os.path.isfile(os.path.join(folder, name))]
        elif not any(name.startswith("rng_state") for name in os.listdir(folder)):
            problems.append("rng_state.pth is missing")
    problems += [f"{name} is missing" for name in required if not os.path.isfile(os.path.join(folder, name))]
    return problems


def checkpoints(output_dir: str | os.PathLike[str]) -> list[str]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest (highest N) first."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return []
    found = [
        (int(match.group(1)), os.path.join(output_dir, name))
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    ]
    return [path for _, path in sorted(found, reverse=True)]


def last_complete_checkpoint(
    output_dir: str | os.PathLike[str], world_size: int = 1, required: Sequence[str] = (), optimizer_saved: bool = True
) -> tuple[str | None, dict[str, list[str]]]:
    """The newest complete checkpoint of ``output_dir`` (None if there is none) and the newer incomplete ones.

    Returns:
        ``(path or None, {skipped folder: its problems})``.
    """
    skipped: dict[str, list[str]] = {}
    for path in checkpoints(output_dir):
        problems = checkpoint_problems(path, world_size, required, optimizer_saved)
        if not problems:
            return path, skipped
        skipped[path] = problems
    return None, skipped
