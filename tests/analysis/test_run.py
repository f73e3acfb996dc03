import json

import numpy as np
import pytest

from losia_factory.analysis.run import RunFilesError, load_run, module_type_and_layer
from tests.analysis.fake_run import (
    DOWN,
    FINAL_STEP,
    HEAD,
    RESELECT_4,
    RESELECT_6,
    START,
    Q,
    make_run,
    subnet_lines,
    write_jsonl,
)


def periods(run, name):
    return [
        (p.start, p.end, p.out_idx.tolist(), None if p.in_idx is None else p.in_idx.tolist())
        for p in run.targets[name].periods
    ]


def test_periods_follow_the_recorded_reselections(tmp_path):
    run = load_run(make_run(tmp_path / "run", with_weights=False))
    assert run.final_step == FINAL_STEP
    assert periods(run, Q) == [(0, 4, *START[Q]), (4, 10, *RESELECT_4[Q])]
    assert periods(run, HEAD) == [(0, 6, *START[HEAD]), (6, 10, *RESELECT_6[HEAD])]
    assert run.targets[DOWN].shape == (6, 10) and run.targets[DOWN].num_in == 2
    assert run.targets[HEAD].num_in is None and run.targets[HEAD].num_out == 3
    assert run.reselections == [(4, "model.layers.0"), (6, "lm_head")]
    assert run.lr_steps == list(range(1, 11)) and run.lrs["model.layers.0"][4] == 0.0


def test_a_resumed_run_drops_the_abandoned_attempt(tmp_path):
    folder = make_run(tmp_path / "run", with_weights=False)
    lines = subnet_lines()[:-1]  # start, reselect 4, reselect 6; the attempt then reselected at 8 and crashed
    abandoned = {
        "step": 8,
        "event": "reselect",
        "groups": {"0": "model.layers.0"},
        "targets": [{"name": Q, "group": 0, "out_idx": [6, 7], "in_idx": [0, 5]}],
    }
    restart = dict(subnet_lines()[0], step=6)
    restart["targets"] = [dict(t) for t in restart["targets"]]
    for t in restart["targets"]:
        out_idx, in_idx = {**START, **RESELECT_4, **RESELECT_6}[t["name"]]
        t["out_idx"], t["in_idx"] = out_idx, in_idx
    final = {
        "step": 8,
        "event": "reselect",
        "groups": {"0": "model.layers.0"},
        "targets": [{"name": Q, "group": 0, "out_idx": [2, 3], "in_idx": [1, 5]}],
    }
    write_jsonl(folder / "losia_subnets.jsonl", [*lines, abandoned, restart, final, {"step": 10, "event": "end"}])
    run = load_run(folder)
    assert periods(run, Q) == [(0, 4, *START[Q]), (4, 8, *RESELECT_4[Q]), (8, 10, [2, 3], [1, 5])]
    assert periods(run, HEAD) == [(0, 6, *START[HEAD]), (6, 10, *RESELECT_6[HEAD])]


def test_missing_or_foreign_files_are_refused_with_the_fix(tmp_path):
    with pytest.raises(RunFilesError, match=r"losia_subnets\.jsonl.*finetuning_type: losia"):
        load_run(tmp_path)
    (tmp_path / "losia_subnets.jsonl").write_text(json.dumps({"step": 3, "event": "reselect"}) + "\n")
    with pytest.raises(RunFilesError, match="'start' line"):
        load_run(tmp_path)
    (tmp_path / "losia_subnets.jsonl").write_text("{not json\n")
    with pytest.raises(RunFilesError, match=":1 is not valid JSON"):
        load_run(tmp_path)


def test_module_names():
    assert module_type_and_layer("model.layers.12.self_attn.q_proj") == ("q_proj", 12)
    assert module_type_and_layer("lm_head") == ("lm_head", None)
    assert np.array_equal(np.asarray([1]), np.asarray([1]))
