import numpy as np
import pytest

from losia_factory.analysis.run import load_run
from losia_factory.analysis.subnets import (
    MAX_CURVE_POINTS,
    concentration,
    frequencies,
    neuron_frequency,
    positions,
    resolve_target,
    sorted_curve,
    trained_coverage,
    trained_mask,
)
from tests.analysis.fake_run import DOWN, HEAD, Q, make_run


@pytest.fixture
def run(tmp_path):
    return load_run(make_run(tmp_path / "run", with_weights=False))


def test_frequencies_are_shares_of_steps_counted_by_hand(run):
    # q_proj: out {0,1} for steps 1-4, {1,5} for steps 5-10; in {0,1,2} then {2,3,4}.
    assert neuron_frequency(run.targets[Q], "out").tolist() == [0.4, 1.0, 0, 0, 0, 0.6, 0, 0]
    assert neuron_frequency(run.targets[Q], "in").tolist() == [0.4, 0.4, 1.0, 0.6, 0.6, 0]
    assert neuron_frequency(run.targets[DOWN], "in").tolist() == [1.0, 0.6, 0, 0, 0, 0, 0, 0, 0, 0.4]
    # lm_head: rows {0,5,7} for steps 1-6, {5,7,11} for steps 7-10; every input always.
    assert neuron_frequency(run.targets[HEAD], "out").tolist() == [0.6, 0, 0, 0, 0, 1.0, 0, 1.0, 0, 0, 0, 0.4]
    assert neuron_frequency(run.targets[HEAD], "in").tolist() == [1.0] * 6


def test_frequency_figure_data_and_concentration(run):
    data = frequencies(run)
    assert list(data) == ["q_proj", "down_proj", "lm_head"]
    assert "in" not in data["lm_head"]
    q_out = data["q_proj"]["out"]
    assert q_out["sorted"] == [[1.0, 0.6, 0.4, 0, 0, 0, 0, 0]]
    summary = q_out["summary"]
    assert summary["kept"] == pytest.approx(2 / 8)
    assert summary["never"] == pytest.approx(5 / 8) and summary["always"] == pytest.approx(1 / 8)
    assert summary["never_if_random"] == pytest.approx(0.75**2)  # two periods of 2 out of 8 outputs
    assert summary["top10_share"] == pytest.approx(1.0 / 2.0)  # round(0.8) = 1 neuron holds 1.0 of 2.0
    freq = np.array([0.4, 1.0, 0, 0, 0, 0.6, 0, 0])
    gini = np.abs(freq[:, None] - freq[None, :]).sum() / (2 * len(freq) ** 2 * freq.mean())
    assert summary["gini"] == pytest.approx(gini)
    assert concentration(np.full(10, 0.3), 0.3)["gini"] == pytest.approx(0.0)


def test_coverage_is_the_union_of_the_trained_blocks(run):
    coverage = trained_coverage(run)
    assert coverage[Q] == pytest.approx(11 / 48)  # two 2x3 blocks sharing entry (1, 2)
    assert coverage[DOWN] == pytest.approx(10 / 60)  # two 3x2 blocks sharing rows {2,3} x input 0
    assert coverage[HEAD] == pytest.approx(4 * 6 / 72)  # rows 0, 5, 7, 11, all inputs
    mask = trained_mask(run.targets[Q])
    assert mask[1, 2] and mask[5, 4] and not mask[5, 0]


def test_a_subnet_chosen_at_the_last_step_trains_nothing(run):
    run.targets[Q].periods[-1].start = run.targets[Q].periods[-1].end = 10
    run.targets[Q].periods[0].end = 10
    assert trained_coverage(run)[Q] == pytest.approx(6 / 48)
    assert neuron_frequency(run.targets[Q], "out").tolist() == [1.0, 1.0, 0, 0, 0, 0, 0, 0]


def test_positions_of_one_layer(run):
    data = positions(resolve_target(run, "self_attn.q_proj"))
    assert data["steps"] == [0, 4]
    assert data["out_idx"] == [[0, 1], [1, 5]] and data["in_idx"] == [[0, 1, 2], [2, 3, 4]]
    assert data["retained_out"] == [0.5] and data["retained_in"] == pytest.approx([1 / 3])
    assert data["ever_out"] == pytest.approx(3 / 8) and data["ever_in"] == pytest.approx(5 / 6)
    assert positions(resolve_target(run, None))["name"] == Q  # default: first block-shaped module of the middle layer
    assert positions(run.targets[HEAD])["in_idx"] is None


def test_an_unknown_layer_is_refused_naming_the_option(run):
    with pytest.raises(ValueError, match="--layer 'v_proj': none matches"):
        resolve_target(run, "v_proj")


def test_long_frequency_curves_are_resampled_for_the_json():
    freq = np.random.default_rng(0).random(2000)
    curve = sorted_curve(freq)
    assert len(curve) == MAX_CURVE_POINTS
    assert curve[0] == pytest.approx(freq.max(), abs=1e-6) and curve[-1] == pytest.approx(freq.min(), abs=1e-6)
    assert curve == sorted(curve, reverse=True)
    assert sorted_curve(np.array([0.2, 0.5, 0.1])) == [0.5, 0.2, 0.1]
