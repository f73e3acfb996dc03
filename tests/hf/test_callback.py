"""The callback's files: losia_config.json (trainable parameters) and losia_subnets.jsonl (the subnets over time)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import torch

from losia_factory.analysis.run import load_run
from losia_factory.core import LosiaAdamW, LosiaConfig, attach_losia, find_attachment
from losia_factory.hf.callback import CONFIG_FILE, SUBNETS_FILE, LosiaCallback, write_losia_config
from tests.toy_models import make_batches, make_toy

CONFIG = LosiaConfig(rank_factor=0.5, time_slot=2, output_rank_factor=0.25, extra_trainable=("*norm*",))


def test_config_file_names_the_extra_parameters_of_an_attached_model(tmp_path):
    model = make_toy()
    opt = attach_losia(model, CONFIG, lr=1e-2)
    write_losia_config(opt, str(tmp_path))
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert saved["extra_trainable"] == list(find_attachment(model).layout.extra_trainable)
    assert saved["extra_trainable"] and all("norm" in name for name in saved["extra_trainable"])
    assert saved["trainable"]["extra"] == sum(p.numel() for p in opt.param_groups[0]["params"])
    assert saved["targets"] == [t.name for t in opt.targets]


def test_a_hand_built_optimizer_reports_unknown_extra_names_not_an_empty_list(tmp_path):
    model = make_toy()
    attachment_opt = attach_losia(model, CONFIG, lr=1e-2)
    extras = attachment_opt.param_groups[0]["params"]
    opt = LosiaAdamW(attachment_opt.targets, len(attachment_opt.group_targets), CONFIG, extra_params=extras)
    write_losia_config(opt, str(tmp_path))
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert saved["extra_trainable"] is None
    assert saved["trainable"]["extra"] == sum(p.numel() for p in extras) > 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_recorded_subnets_are_the_ones_each_step_trained(tmp_path):
    """Drive the callback like the Trainer does for 9 steps (T=2, 4 groups): the periods read back from
    losia_subnets.jsonl give, for every step, exactly the indices the optimizer held during that step."""
    model = make_toy()
    opt = attach_losia(model, CONFIG, lr=1e-2)
    callback = LosiaCallback()
    args = SimpleNamespace(output_dir=str(tmp_path), logging_steps=1, report_to=[], deepspeed=None, process_index=0)
    state = SimpleNamespace(global_step=0, log_history=[])
    used: dict[int, dict[str, tuple[list[int], list[int] | None]]] = {}
    callback.on_train_begin(args, state, None, optimizer=opt, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no rewarm scheduler in this loop
        for batch in make_batches(9):
            callback.on_step_begin(args, state, None, optimizer=opt)
            used[state.global_step + 1] = {
                t.name: (t.out_idx.tolist(), None if t.in_idx is None else t.in_idx.tolist()) for t in opt.targets
            }
            model.loss(batch).backward()
            opt.step()
            opt.zero_grad()
            state.global_step += 1
            callback.on_step_end(args, state, None, optimizer=opt)
    callback.on_train_end(args, state, None, optimizer=opt)
    lines = [json.loads(line) for line in (tmp_path / SUBNETS_FILE).read_text().splitlines()]
    assert [line["event"] for line in lines] == ["start", "reselect", "reselect", "reselect", "reselect", "end"]
    assert [line["step"] for line in lines] == [0, 2, 4, 6, 8, 9]
    assert lines[0]["base_model"] is None  # a bare nn.Module has no name_or_path
    run = load_run(tmp_path)
    assert run.final_step == 9 and sorted(run.targets) == sorted(t.name for t in opt.targets)
    for step, indices in used.items():
        for name, (out_idx, in_idx) in indices.items():
            period = next(p for p in run.targets[name].periods if p.start < step <= p.end)
            assert period.out_idx.tolist() == out_idx, (step, name)
            assert (period.in_idx is None and in_idx is None) or np.array_equal(period.in_idx, in_idx)
    assert any(len(t.periods) > 1 for t in run.targets.values())
    head = run.targets["lm_head"]
    assert head.num_in is None and head.shape == tuple(model.lm_head.weight.shape)
    final = next(t for t in opt.targets if t.name == "lm_head").out_idx
    assert torch.equal(torch.as_tensor(head.periods[-1].out_idx), final)
