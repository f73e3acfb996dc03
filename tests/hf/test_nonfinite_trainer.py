"""A NaN loss inside a real transformers Trainer (gradient clipping on): LoSiA and PiLoRA skip the step, write
nothing, log it, and stop after too many in a row."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from losia_factory.core import LosiaConfig, create_losia_optimizer, prepare_losia
from losia_factory.core.nonfinite import NonFiniteStepsError
from losia_factory.hf import LosiaCallback, build_losia_scheduler
from losia_factory.hf.pilora_callback import LOG_FILE as PILORA_LOG
from losia_factory.hf.pilora_callback import PiloraCallback
from losia_factory.pilora import PiloraConfig, attach_pilora, find_pilora_attachment
from tests.pilora.test_layer_and_model import tiny_llama

STEPS = 6


class NanLossTrainer(Trainer):
    """Multiplies the loss by NaN during the given 0-based optimizer steps (as a broken sample or overflow would)."""

    def __init__(self, *args, bad_steps=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.bad_steps = set(bad_steps)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return loss * float("nan") if self.state.global_step in self.bad_steps else loss


class Snapshots(TrainerCallback):
    """Records, for every bad step, whether the parameters and the optimizer state came out of it unchanged."""

    def __init__(self, bad_steps):
        self.bad_steps, self.before, self.unchanged = set(bad_steps), None, {}

    @staticmethod
    def _state(model, optimizer):
        tensors = [p.detach().clone() for p in model.parameters()]
        for state in optimizer.state.values():
            tensors += [torch.as_tensor(v).clone() for v in state.values()]
        return tensors

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step in self.bad_steps:
            self.before = self._state(model, optimizer)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step - 1 in self.bad_steps:
            after = self._state(model, optimizer)
            self.unchanged[state.global_step - 1] = len(after) == len(self.before) and all(
                torch.equal(a, b) for a, b in zip(self.before, after)
            )


def dataset():
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 64, (12,), generator=generator) for _ in range(2 * STEPS)]
    return [{"input_ids": ids, "labels": ids} for ids in rows]


def arguments(tmp_path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


def losia_trainer(tmp_path, bad_steps, **config):
    model = tiny_llama(seed=4).train()
    prepare_losia(model, LosiaConfig(rank_factor=0.5, time_slot=2, output_rank_factor=0.25, **config))
    args = arguments(tmp_path)
    optimizer = create_losia_optimizer(model, lr=args.learning_rate)
    scheduler = build_losia_scheduler(args, optimizer, STEPS)
    snapshots = Snapshots(bad_steps)
    trainer = NanLossTrainer(
        model=model,
        args=args,
        train_dataset=dataset(),
        optimizers=(optimizer, scheduler),
        callbacks=[LosiaCallback(), snapshots],
        bad_steps=bad_steps,
    )
    return trainer, snapshots


def events(path, kind="nonfinite"):
    return [json.loads(line) for line in path.read_text().splitlines() if json.loads(line).get("event") == kind]


def test_losia_skips_logs_and_trains_on(tmp_path):
    trainer, snapshots = losia_trainer(tmp_path, bad_steps=(2, 3))
    trainer.train()
    assert snapshots.unchanged == {2: True, 3: True}
    skipped = events(tmp_path / "losia_log.jsonl")
    assert [(e["step"], e["skipped"], e["consecutive"]) for e in skipped] == [(3, 1, 1), (4, 2, 2)]
    assert all(any(s.startswith("importance gradient of") for s in e["sources"]) for e in skipped)
    # The timeline kept the Trainer's clock: the window ending at step 4 still reselected.
    assert [e["step"] for e in events(tmp_path / "losia_log.jsonl", "reselect")] == [2, 4, 6]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.state.log_history[-2]["losia_nonfinite_skipped"] == 2


def test_losia_stops_after_too_many_in_a_row(tmp_path):
    trainer, _ = losia_trainer(tmp_path, bad_steps=(1, 2, 3), max_consecutive_nonfinite_steps=3)
    with pytest.raises(NonFiniteStepsError, match="3 consecutive optimizer steps"):
        trainer.train()
    assert len(events(tmp_path / "losia_log.jsonl")) == 2  # the third one raised before it could be logged


def pilora_trainer(tmp_path, bad_steps, **config):
    model = tiny_llama(seed=4).train()
    settings = dict(rank=4, supplementary_rank=1, alpha=8, dropout=0.0, probe_steps=3)
    attach_pilora(model, PiloraConfig(**{**settings, **config}))
    snapshots = Snapshots(bad_steps)
    trainer = NanLossTrainer(
        model=model,
        args=arguments(tmp_path),
        train_dataset=dataset(),
        callbacks=[PiloraCallback(), snapshots],
        bad_steps=bad_steps,
    )
    return trainer, snapshots


def test_pilora_skips_logs_and_keeps_nan_out_of_the_hit_counts(tmp_path):
    trainer, snapshots = pilora_trainer(tmp_path, bad_steps=(1, 4))
    trainer.train()
    assert snapshots.unchanged == {1: True, 4: True}
    assert [(e["step"], e["skipped"]) for e in events(tmp_path / PILORA_LOG)] == [(2, 1), (5, 2)]
    attachment = find_pilora_attachment(trainer.model)
    assert attachment.stage == 2
    assert all(c.probes == 2 and torch.isfinite(c.total).all() for c in attachment.counters.values())  # 3 - 1
    assert all(torch.isfinite(p).all() for p in attachment.trainable_parameters())


def test_pilora_stops_after_too_many_in_a_row(tmp_path):
    trainer, _ = pilora_trainer(tmp_path, bad_steps=(0, 1), max_consecutive_nonfinite_steps=2)
    with pytest.raises(NonFiniteStepsError, match="2 consecutive optimizer steps"):
        trainer.train()
