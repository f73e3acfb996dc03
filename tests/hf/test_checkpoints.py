"""Complete and half-written Trainer checkpoints: what a kill during a save leaves is recognized, never resumed."""

from __future__ import annotations

import json

import pytest

from losia_factory.hf.checkpoints import checkpoint_problems, checkpoints, last_complete_checkpoint


def write_checkpoint(root, step, world_size=1, required=("losia_config.json",), skip=()):
    """A checkpoint folder with the files the Trainer (and the method) write; ``skip`` leaves some out."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    names = ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", *required]
    names += ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth" for r in range(world_size)]
    for name in names:
        if name not in skip:
            (folder / name).write_text(json.dumps({"global_step": step}) if name.endswith(".json") else "x")
    return folder


def test_a_complete_checkpoint_has_no_problem(tmp_path):
    assert checkpoint_problems(write_checkpoint(tmp_path, 3), required=("losia_config.json",)) == []
    ddp = write_checkpoint(tmp_path, 6, world_size=2)
    assert checkpoint_problems(ddp, world_size=2, required=("losia_config.json",)) == []


@pytest.mark.parametrize(
    ("skip", "truncate", "world_size", "problem"),
    [
        (("trainer_state.json",), None, 1, "trainer_state.json is missing (the Trainer writes it last)"),
        ((), "trainer_state.json", 1, "trainer_state.json is unreadable"),
        (("losia_config.json",), None, 1, "losia_config.json is missing"),
        (("rng_state_1.pth",), None, 2, "rng_state_1.pth is missing"),
        (("rng_state.pth",), None, 1, "rng_state.pth is missing"),
    ],
)
def test_what_an_interrupted_save_leaves_out_is_named(tmp_path, skip, truncate, world_size, problem):
    folder = write_checkpoint(tmp_path, 3, world_size=world_size, skip=skip)
    if truncate:
        (folder / truncate).write_text('{"global_step": ')  # cut off mid-write
    problems = checkpoint_problems(folder, world_size=world_size, required=("losia_config.json",))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_save_only_model_checkpoints_need_no_rng_state(tmp_path):
    folder = write_checkpoint(tmp_path, 3, skip=("rng_state.pth",))
    assert checkpoint_problems(folder, optimizer_saved=False, required=("losia_config.json",)) == []


def test_the_newest_complete_checkpoint_is_chosen_and_newer_broken_ones_reported(tmp_path):
    write_checkpoint(tmp_path, 3)
    write_checkpoint(tmp_path, 12)
    write_checkpoint(tmp_path, 20, skip=("trainer_state.json",))
    (tmp_path / "checkpoint-99.txt").write_text("not a folder")
    assert checkpoints(tmp_path) == [
        str(tmp_path / "checkpoint-20"),
        str(tmp_path / "checkpoint-12"),
        str(tmp_path / "checkpoint-3"),
    ]
    latest, skipped = last_complete_checkpoint(tmp_path, required=("losia_config.json",))
    assert latest == str(tmp_path / "checkpoint-12")  # by number, not by name: 12 > 3
    assert list(skipped) == [str(tmp_path / "checkpoint-20")]
    assert last_complete_checkpoint(tmp_path / "missing") == (None, {})
