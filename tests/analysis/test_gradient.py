import numpy as np
import pytest
import torch

from losia_factory.analysis.gradient import block_share, gradient_shares, shares_for
from losia_factory.analysis.run import Period, Target, load_run
from tests.analysis.fake_run import DOWN, HEAD, Q, make_run


def target(shape, out_idx, in_idx):
    t = Target("model.layers.0.mlp.up_proj", 0, shape)
    t.periods = [Period(0, 5, np.asarray(out_idx), None if in_idx is None else np.asarray(in_idx))]
    return t


def test_a_planted_block_is_found_and_the_shares_are_ordered():
    generator = torch.Generator().manual_seed(0)
    grad = torch.rand(16, 12, generator=generator) * 0.1
    grad[2:6, 3:6] += 5.0  # a heavy 4 x 3 block
    t = target((16, 12), [0, 1, 2, 3], [0, 1, 2])
    shares = shares_for(grad, t, "best")
    assert shares["random"] == pytest.approx(12 / 192)
    planted = float(grad[2:6, 3:6].sum() / grad.sum())
    assert shares["localized"] == pytest.approx(planted) and shares["topk"] == pytest.approx(planted)
    assert shares["final"] == pytest.approx(float(grad[:4, :3].sum() / grad.sum()))
    assert shares["topk"] >= shares["localized"] >= shares["random"]


def test_random_blocks_capture_the_expected_share_on_average():
    generator = torch.Generator().manual_seed(1)
    grad = torch.rand(20, 10, generator=generator) ** 4
    t = target((20, 10), list(range(5)), list(range(3)))
    expected = shares_for(grad, t, "best")["random"]
    draws = [
        block_share(
            grad.double(), torch.randperm(20, generator=generator)[:5], torch.randperm(10, generator=generator)[:3]
        )
        for _ in range(3000)
    ]
    assert np.mean(draws) == pytest.approx(expected, rel=0.03)


def test_output_layer_rows_and_the_summary(tmp_path):
    run = load_run(make_run(tmp_path / "run", with_weights=False))
    generator = torch.Generator().manual_seed(2)
    grads = {name: torch.randn(*t.shape, generator=generator) for name, t in run.targets.items()}
    grads[HEAD][9] += 100.0  # one dominant output row
    data = gradient_shares(run, grads, "input_first")
    head = data["targets"][HEAD]
    assert head["random"] == pytest.approx(3 / 12)
    assert head["localized"] > 0.5
    final_rows = grads[HEAD].abs()[[5, 7, 11]].sum() / grads[HEAD].abs().sum()
    assert head["final"] == pytest.approx(float(final_rows))
    for name in (Q, DOWN, HEAD):
        row = data["targets"][name]
        assert row["topk"] >= row["localized"] >= row["random"]
    assert data["summary"]["q_proj"]["random"] == pytest.approx(6 / 48)
