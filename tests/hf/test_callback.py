"""losia_config.json as the callback writes it: what it says about the run's trainable parameters."""

from __future__ import annotations

import json

from losia_factory.core import LosiaAdamW, LosiaConfig, attach_losia, find_attachment
from losia_factory.hf.callback import CONFIG_FILE, write_losia_config
from tests.toy_models import make_toy

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
