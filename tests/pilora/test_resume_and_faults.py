"""PiLoRA through a checkpoint and through bad values: the same parameters in both stages, resume bit-exact in either
stage, the saved state refused when it does not fit, and NaN kept out of hit counts and masks."""

from __future__ import annotations

import pytest
import torch

from losia_factory.pilora import PiloraConfig, attach_pilora
from losia_factory.pilora.model import STATE_FILE
from tests.pilora.test_layer_and_model import tiny_llama

STEPS, PROBE = 8, 3
CONFIG = dict(rank=4, supplementary_rank=2, alpha=8, dropout=0.0, probe_steps=PROBE, interval=1, init="carry")


def batches():
    generator = torch.Generator().manual_seed(5)
    return [torch.randint(0, 64, (4, 12), generator=generator) for _ in range(STEPS)]


def setup(**overrides):
    model = tiny_llama(seed=2)
    pilora = attach_pilora(model, PiloraConfig(**{**CONFIG, **overrides}))
    optimizer = torch.optim.AdamW(pilora.trainable_parameters(), lr=1e-2, weight_decay=0.1)
    return model, pilora, optimizer


def run(model, pilora, optimizer, steps: range):
    data = batches()
    for step in steps:
        ids = data[step]
        model(input_ids=ids, labels=ids).loss.backward()
        pilora.observe(step)
        optimizer.step()
        optimizer.zero_grad()
        if pilora.switch_due(step, STEPS):
            pilora.enter_stage2()
            for param in pilora.trainable_parameters():
                optimizer.state.pop(param, None)


def adapters(pilora) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, layer in pilora.layers.items() for k, v in layer.factors().items()}


def test_the_trainable_parameters_are_the_same_tensors_in_both_stages_and_unused_entries_stay_zero():
    model, pilora, optimizer = setup()
    before = [id(p) for p in pilora.trainable_parameters()]
    run(model, pilora, optimizer, range(STEPS))
    assert pilora.stage == 2 and [id(p) for p in pilora.trainable_parameters()] == before
    for layer in pilora.layers.values():
        mask = layer.dominant_mask
        # With weight decay and five stage-2 steps, the entries outside the compact blocks are still exactly zero.
        assert torch.count_nonzero(layer.lora_B[mask, 4:]) == 0 and torch.count_nonzero(layer.lora_B[~mask, :4]) == 0
        assert torch.count_nonzero(layer.lora_B[mask, :4]) > 0


@pytest.mark.parametrize("stop", [2, PROBE, 5], ids=["stage1", "at-switch", "stage2"])
def test_resume_equals_uninterrupted(tmp_path, stop):
    model, pilora, optimizer = setup()
    run(model, pilora, optimizer, range(STEPS))
    expected = adapters(pilora)

    model, pilora, optimizer = setup()
    run(model, pilora, optimizer, range(stop))
    pilora.save_training_state(tmp_path)
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    del model, pilora, optimizer

    model, pilora, optimizer = setup()  # a new process: fresh stage-1 model and optimizer
    pilora.load_training_state(tmp_path)
    optimizer.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))
    assert pilora.stage == (1 if stop < PROBE else 2)
    run(model, pilora, optimizer, range(stop, STEPS))
    got = adapters(pilora)
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_state_from_other_settings_or_no_state_is_refused(tmp_path):
    model, pilora, optimizer = setup()
    run(model, pilora, optimizer, range(2))
    pilora.save_training_state(tmp_path)
    _, other, _ = setup(rank=8)
    with pytest.raises(ValueError, match=r"other PiLoRA settings \(rank: 4\)"):
        other.load_training_state(tmp_path)
    _, tolerant, _ = setup(max_consecutive_nonfinite_steps=50)  # the NaN tolerance may change on resume
    tolerant.load_training_state(tmp_path)
    _, fresh, _ = setup()
    with pytest.raises(FileNotFoundError, match=f"{STATE_FILE} not found: this checkpoint has no PiLoRA training"):
        fresh.load_training_state(tmp_path / "elsewhere")


def test_a_nonfinite_probe_leaves_the_hit_counts_untouched():
    model, pilora, _ = setup()
    ids = batches()[0]
    model(input_ids=ids, labels=ids).loss.backward()
    assert pilora.observe(0)
    counts = {n: (c.hits.clone(), c.total.clone(), c.probes) for n, c in pilora.counters.items()}
    model(input_ids=ids, labels=ids).loss.backward()
    next(iter(pilora.layers.values())).lora_B.grad[0, 0] = float("nan")
    assert not pilora.gradients_finite()
    assert not pilora.observe(1)
    for name, (hits, total, probes) in counts.items():
        counter = pilora.counters[name]
        assert torch.equal(counter.hits, hits) and torch.equal(counter.total, total) and counter.probes == probes
    pilora.drop_gradients()
    assert all(p.grad is None for p in pilora.trainable_parameters()) and pilora.gradients_finite()
