"""Which checkpoint a losia / pilora run resumes from: never a half-written one, whatever picked it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from losia_factory.llamafactory.checks import choose_checkpoint
from losia_factory.llamafactory.methods import method_named
from tests.hf.test_checkpoints import write_checkpoint

LOSIA = method_named("losia")
PILORA = method_named("pilora")


def args(output_dir, resume=None, overwrite=False, world_size=1):
    return SimpleNamespace(
        do_train=True,
        output_dir=str(output_dir),
        resume_from_checkpoint=resume,
        overwrite_output_dir=overwrite,
        world_size=world_size,
        save_only_model=False,
    )


@pytest.fixture
def output_dir(tmp_path):
    write_checkpoint(tmp_path, 3)
    write_checkpoint(tmp_path, 6, skip=("losia_config.json", "trainer_state.json"))  # killed while saving
    return tmp_path


@pytest.mark.parametrize("resume", [True, "true", None], ids=["true", "string-true", "automatic"])
def test_true_or_automatic_resume_skips_the_half_written_checkpoint(output_dir, resume, caplog):
    training_args = args(output_dir, resume)
    choose_checkpoint(LOSIA, training_args)
    assert training_args.resume_from_checkpoint == str(output_dir / "checkpoint-3")
    # LLaMA-Factory's logger prints through a handler bound to the stream of whichever test set it up first, so read
    # the record (it propagates to the root logger) rather than the terminal.
    printed = caplog.text
    assert "Skipping incomplete checkpoints" in printed and "checkpoint-6: trainer_state.json is missing" in printed


def test_an_explicit_half_written_checkpoint_is_refused_with_the_fix(output_dir):
    with pytest.raises(ValueError) as info:
        choose_checkpoint(LOSIA, args(output_dir, str(output_dir / "checkpoint-6")))
    message = str(info.value)
    assert message.startswith(f"resume_from_checkpoint: {output_dir / 'checkpoint-6'} is incomplete")
    assert "losia_config.json is missing" in message and f"resume from {output_dir / 'checkpoint-3'}" in message


def test_a_checkpoint_without_the_method_state_is_refused(output_dir):
    # A LoSiA checkpoint has no pilora_state.safetensors: a PiLoRA run must not half-load it.
    with pytest.raises(ValueError, match=r"pilora_state\.safetensors is missing"):
        choose_checkpoint(PILORA, args(output_dir, str(output_dir / "checkpoint-3")))


def test_nothing_complete_to_resume_is_an_error_and_nothing_to_resume_is_a_new_run(tmp_path):
    write_checkpoint(tmp_path / "out", 2, skip=("rng_state.pth",))
    with pytest.raises(
        ValueError, match=r"No complete checkpoint to resume from .*checkpoint-2: rng_state\.pth is missing"
    ):
        choose_checkpoint(LOSIA, args(tmp_path / "out", True))
    fresh = args(tmp_path / "new")
    choose_checkpoint(LOSIA, fresh)
    assert fresh.resume_from_checkpoint is None
    overwrite = args(tmp_path / "out", overwrite=True)
    choose_checkpoint(LOSIA, overwrite)
    assert overwrite.resume_from_checkpoint is None
