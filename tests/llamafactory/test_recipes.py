"""Every committed recipe is accepted by LLaMA-Factory's real argument parser with the plugin active."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.reproduce.test_settings import pilora_table5

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("**/*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path, tmp_path):
    from llamafactory.hparams import get_train_args

    config = yaml.safe_load(path.read_text())
    config["output_dir"] = str(tmp_path / "out")  # parse only: nothing is written
    for key in ("bf16", "pure_bf16"):
        if config.get(key):
            config[key] = False  # these machines have no bf16-capable GPU; the rest is checked as written
    # One process cannot parse a DeepSpeed run (LLaMA-Factory asks for FORCE_TORCHRUN): parse the rest, then run our
    # checks on its DeepSpeed config (test_distributed_cli launches that config on 2 processes).
    deepspeed = config.pop("deepspeed", None)
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(config)
    assert finetuning_args.finetuning_type == config["finetuning_type"]
    if finetuning_args.finetuning_type in ("losia", "pilora"):
        method = "losia" if finetuning_args.finetuning_type == "losia" else "pilora"
        assert getattr(finetuning_args, f"{method}_config") is not None
    if deepspeed:
        from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

        from losia_factory.llamafactory.checks import check_train_args

        root = Path(__file__).resolve().parents[2]
        assert (root / deepspeed).is_file(), f"{deepspeed} is relative to the repository root"
        training_args.deepspeed = str(root / deepspeed)
        training_args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(str(root / deepspeed))
        check_train_args(model_args, data_args, training_args, finetuning_args)


@pytest.mark.parametrize("name", ["losia_llama2_7b_math_zero2.yaml", "losia_llama2_7b_math_fsdp.yaml"])
def test_multi_gpu_math_recipe_keeps_the_global_batch(name):
    root = Path(__file__).resolve().parents[2] / "recipes"
    one = yaml.safe_load((root / "losia_llama2_7b_math.yaml").read_text())
    four = yaml.safe_load((root / name).read_text())
    distributed = {"per_device_train_batch_size", "deepspeed", "fsdp", "fsdp_config", "output_dir"}
    assert {k: v for k, v in one.items() if k not in distributed} == {
        k: v for k, v in four.items() if k not in distributed
    }
    gpus = 4  # NPROC_PER_NODE in the recipe's launch line
    assert "NPROC_PER_NODE=4" in (root / name).read_text()
    global_batch = lambda c, n: c["per_device_train_batch_size"] * c["gradient_accumulation_steps"] * n  # noqa: E731
    assert global_batch(four, gpus) == global_batch(one, 1) == 4


def test_70b_zero3_recipe_is_the_math_recipe_on_a_partitioned_70b():
    root = Path(__file__).resolve().parents[2] / "recipes"
    seven = yaml.safe_load((root / "losia_llama2_7b_math.yaml").read_text())
    big = yaml.safe_load((root / "losia_llama2_70b_math_zero3.yaml").read_text())
    # What differs, each for a stated reason in the recipe's header and comments.
    differs = {
        "model_name_or_path",
        "output_dir",
        "per_device_train_batch_size",
        "deepspeed",
        "gradient_checkpointing",
        "losia_importance_dtype",
    }
    assert {k: v for k, v in seven.items() if k not in differs} == {k: v for k, v in big.items() if k not in differs}
    assert big["deepspeed"] == "recipes/deepspeed/ds_z3_config.json"
    assert big["model_name_or_path"] == "meta-llama/Llama-2-70b-hf"


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


@pytest.mark.parametrize(
    ("name", "lr"),
    [
        ("paper/pilora_t1/llama2_7b-commonsense170k-pilora.yaml", 2e-4),
        ("paper/pilora_t1/llama3_8b-commonsense170k-pilora.yaml", 1e-4),
    ],
)
def test_pilora_recipes_have_the_paper_settings(name, lr):
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "recipes" / name).read_text())
    paper = pilora_table5(lr)
    assert {k: config[k] for k in paper} == paper
