"""Every committed recipe is accepted by LLaMA-Factory's real argument parser with the plugin active."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("**/*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path, tmp_path):
    from llamafactory.hparams import get_train_args

    config = yaml.safe_load(path.read_text())
    config["output_dir"] = str(tmp_path / "out")  # parse only: nothing is written
    if config.get("bf16"):
        config["bf16"] = False  # these machines have no bf16-capable GPU; the rest is checked as written
    *_, finetuning_args, _ = get_train_args(config)
    assert finetuning_args.finetuning_type == "losia"
    assert finetuning_args.losia_config is not None


def test_math_recipe_has_the_paper_settings():
    config = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "recipes" / "losia_llama2_7b_math.yaml").read_text()
    )
    paper = {
        "learning_rate": 6.0e-5,
        "losia_time_slot": 100,
        "losia_rank_factor": 0.125,
        "losia_output_rank_factor": 0.125,
        "per_device_train_batch_size": 4,
        "cutoff_len": 2048,
        "num_train_epochs": 3.0,
        "warmup_ratio": 0.1,
        "bf16": True,
        "max_samples": 50000,
        "losia_ema_beta1": 0.85,
        "losia_ema_beta2": 0.85,
    }
    assert {k: config[k] for k in paper} == paper
