import pytest

from losia_factory.analysis.run import load_run
from losia_factory.analysis.timeline import lr_timeline
from tests.analysis.fake_run import make_run


def test_rewarms_and_reselections_from_the_log(tmp_path):
    data = lr_timeline(load_run(make_run(tmp_path / "run", with_weights=False)))
    assert data["steps"] == list(range(1, 11))
    assert data["reselections"] == [[4, "model.layers.0"], [6, "lm_head"]]
    # Each group is below the base rate on the two steps after its reselection (r/T = 0, 1/2).
    assert data["rewarming"] == {"model.layers.0": [5, 6], "lm_head": [7, 8]}
    assert data["summary"]["rewarming_share"] == pytest.approx(4 / 20)
    assert data["summary"]["lowest_ratio"] == 0.0
    assert data["summary"]["groups"] == 2 and data["summary"]["reselections"] == 2
