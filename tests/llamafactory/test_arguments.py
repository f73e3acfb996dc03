"""finetuning_type: losia through LLaMA-Factory's real argument parser (in process, no training)."""

from __future__ import annotations

import importlib
import re

import pytest
import torch

from losia_factory import _import_hook
from losia_factory.llamafactory.patches import PATCHED_SYMBOLS
from tests.llamafactory.conftest import train_config


def parse(assets, tmp_path, **overrides):
    from llamafactory.hparams import get_train_args

    return get_train_args(train_config(assets, tmp_path / "out", **overrides))


def test_every_patched_symbol_is_ours():
    import llamafactory.webui.interface  # noqa: F401  (loads the web UI modules too)

    assert _import_hook.is_installed()
    for module_name, symbol, _ in PATCHED_SYMBOLS:
        owner = importlib.import_module(module_name)
        for part in symbol.split("."):
            owner = getattr(owner, part)
        if symbol == "METHODS":
            assert "losia" in owner
        elif symbol == "LOCALES":
            assert "losia_tab" in owner
        else:
            marker = getattr(owner, "losia_base", None) or getattr(owner, "__wrapped__", None)
            assert marker is not None, f"{module_name}.{symbol} is not patched"


def test_losia_fields_reach_the_config(assets, tmp_path):
    *_, finetuning_args, _ = parse(
        assets,
        tmp_path,
        losia_rank_factor=0.5,
        losia_time_slot=7,
        losia_output_rank_factor=0.0,
        losia_importance="gradient",
        losia_ema_beta1=0.8,
        losia_ema_beta2=0.9,
        losia_mode="sync",
        losia_pro=False,
        losia_target="q_proj,v_proj",
        losia_extra_modules="norm,*.bias",
        losia_selection="input_first",
        losia_importance_dtype="bfloat16",
        losia_seed=3,
        losia_rewarm=False,
        losia_adam_reset="state",
        losia_output_order="last",
    )
    cfg = finetuning_args.losia_config
    assert finetuning_args.finetuning_type == "losia"
    assert (cfg.rank_factor, cfg.time_slot, cfg.output_rank_factor) == (0.5, 7, 0.0)
    assert (cfg.importance, cfg.ema_betas, cfg.mode, cfg.pro) == ("gradient", (0.8, 0.9), "sync", False)
    assert cfg.target_modules == ("q_proj", "v_proj") and cfg.extra_trainable == ("*norm*", "*.bias")
    assert (cfg.selection, cfg.importance_dtype, cfg.seed, cfg.rewarm) == ("input_first", "bfloat16", 3, False)
    assert (cfg.adam_reset, cfg.output_order) == ("state", "last")


@pytest.mark.parametrize(
    "field,value",
    [
        ("losia_rank_factor", 0.0),
        ("losia_rank_factor", 1.5),
        ("losia_time_slot", 0),
        ("losia_output_rank_factor", 1.5),
        ("losia_output_rank_factor", -1.0),
        ("losia_importance", "fisher"),
        ("losia_ema_beta1", 1.0),
        ("losia_mode", "random"),
        ("losia_selection", "top"),
        ("losia_adam_reset", "everything"),
        ("losia_output_order", "middle"),
    ],
)
def test_bad_values_name_the_argument(assets, tmp_path, field, value):
    with pytest.raises(ValueError, match=f"Invalid {field}"):
        parse(assets, tmp_path, **{field: value})


def test_losia_fields_with_another_method_are_refused(assets, tmp_path):
    from llamafactory.hparams import get_train_args

    config = {k: v for k, v in train_config(assets, tmp_path / "o").items() if not k.startswith("losia_")}
    get_train_args({**config, "finetuning_type": "full"})
    with pytest.raises(ValueError, match=r"^losia_rank_factor only apply with `finetuning_type: losia`"):
        get_train_args({**config, "finetuning_type": "lora", "losia_rank_factor": 0.5})


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (dict(stage="ppo", reward_model="x"), "stage: ppo is not supported"),
        (dict(quantization_bit=4), "quantization_bit: 4 cannot be used"),
        (dict(use_unsloth=True), "use_unsloth is not supported"),
        (dict(optim="adafactor"), "optim: adafactor would be ignored"),
        (
            dict(lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps", eval_steps=2, val_size=0.1),
            "lr_scheduler_type: reduce_lr_on_plateau is not supported",
        ),
        (dict(use_galore=True), "use_galore: GaLore replaces the optimizer"),
        (dict(stage="rm", dataset="demo_pairs"), "set losia_output_rank_factor: 0"),
    ],
)
def test_refused_combinations(assets, tmp_path, overrides, needle):
    with pytest.raises(ValueError, match=needle):
        parse(assets, tmp_path, **overrides)


def test_fp16_is_refused(assets, tmp_path, monkeypatch):
    # transformers itself refuses fp16 on a machine without a GPU; check our message on the parsed arguments.
    from llamafactory.hparams import get_train_args

    from losia_factory.llamafactory.checks import check_train_args

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(train_config(assets, tmp_path / "o"))
    monkeypatch.setattr(training_args, "fp16", True)
    with pytest.raises(ValueError, match=r"fp16: true .* is not supported"):
        check_train_args(model_args, data_args, training_args, finetuning_args)


def _zero(**changes) -> dict:
    from losia_factory.llamafactory.deepspeed_config import zero_config

    # The shipped stage-3 config, unless the row changes the stage itself (of the stage-2 file, as a user would).
    config = zero_config(2 if "zero_optimization.stage" in changes else 3)
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    return config


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"zero_optimization.zero_hpz_partition_size": 2}, "hierarchical partitioning"),
        ({"zero_optimization.zero_quantized_weights": True}, "quantized weights"),
        ({"zero_optimization.offload_param": {"device": "nvme"}}, 'offload_param to "nvme" is not supported'),
        ({"zero_optimization.offload_optimizer": {"device": "nvme"}}, 'offload_optimizer to "nvme" is not supported'),
        ({"zero_optimization.stage": 0}, "DeepSpeed without ZeRO"),
        ({"zero_optimization.offload_optimizer": {"device": "cpu"}}, '"zero_force_ds_cpu_optimizer": false'),
        ({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}, "defines an optimizer"),
        ({"scheduler": {"type": "WarmupLR"}}, "defines a scheduler"),
        ({"zero_optimization.round_robin_gradients": True}, '"round_robin_gradients": true reorders'),
        ({"zero_optimization.elastic_checkpoint": True}, "elastic or universal checkpoints"),
    ],
)
def test_deepspeed_settings_losia_cannot_run_are_refused(assets, tmp_path, changes, needle):
    import json

    path = tmp_path / "ds.json"
    path.write_text(json.dumps(_zero(**changes)))
    with pytest.raises(ValueError, match=needle):
        parse(assets, tmp_path, deepspeed=str(path), ddp_backend="gloo")


@pytest.mark.parametrize("stage,offload", [(1, False), (2, False), (3, False), (3, True)])
def test_shipped_zero_configs_are_accepted_and_match_the_generator(assets, tmp_path, stage, offload):
    import json
    from pathlib import Path

    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from losia_factory.llamafactory.checks import check_train_args
    from losia_factory.llamafactory.deepspeed_config import zero_config

    name = f"ds_z{stage}_{'offload_' if offload else ''}config.json"
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "deepspeed" / name
    assert json.loads(recipe.read_text()) == zero_config(stage, offload)
    # One process cannot parse a DeepSpeed run (LLaMA-Factory asks for FORCE_TORCHRUN): check our part on parsed
    # arguments; test_distributed_cli runs the ZeRO-2 file through llamafactory-cli on 2 processes.
    model_args, data_args, training_args, finetuning_args, _ = parse(assets, tmp_path)
    training_args.deepspeed = str(recipe)
    training_args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(str(recipe))
    check_train_args(model_args, data_args, training_args, finetuning_args)
    hierarchical = {"stage": 3, "zero_hpz_partition_size": 2}
    bad = HfTrainerDeepSpeedConfig({**zero_config(stage), "zero_optimization": hierarchical})
    training_args.hf_deepspeed_config = bad
    with pytest.raises(ValueError, match="zero_hpz_partition_size"):
        check_train_args(model_args, data_args, training_args, finetuning_args)


def test_fsdp2_is_accepted_through_the_trainer_arguments(assets, tmp_path):
    from llamafactory.hparams import get_train_args

    fsdp2 = {"fsdp": "full_shard auto_wrap", "fsdp_config": {"version": 2}}
    *_, training_args, finetuning_args, _ = get_train_args(train_config(assets, tmp_path / "o", **fsdp2))
    assert finetuning_args.finetuning_type == "losia" and training_args.fsdp_config["version"] == 2


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"FSDP_VERSION": "1"}, "Set fsdp_version: 2 in the accelerate config"),
        ({"FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"}, "Set fsdp_offload_params: false"),
        ({"FSDP_VERSION": "2", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}, "cpu_ram_efficient_loading: false"),
        ({"FSDP_VERSION": "2"}, None),
    ],
)
def test_fsdp_from_an_accelerate_config(assets, tmp_path, monkeypatch, env, says):
    """``accelerate launch --config_file`` hands FSDP over in ``ACCELERATE_USE_FSDP`` / ``FSDP_*`` variables."""
    from llamafactory.hparams import get_train_args

    from losia_factory.llamafactory.checks import check_train_args

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(train_config(assets, tmp_path / "o"))
    for key, value in {"ACCELERATE_USE_FSDP": "true", **env}.items():
        monkeypatch.setenv(key, value)
    if says is None:
        check_train_args(model_args, data_args, training_args, finetuning_args)
        return
    with pytest.raises(ValueError, match=re.escape(says)):
        check_train_args(model_args, data_args, training_args, finetuning_args)


def test_target_patterns_that_match_nothing_fail_at_model_load(assets, tmp_path):
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    model_args, _, _, finetuning_args, _ = get_train_args(
        train_config(assets, tmp_path / "o", losia_target="query_key_value")
    )
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    with pytest.raises(ValueError, match=r"Invalid losia_target: .*matches no nn.Linear.*q_proj"):
        load_model(tokenizer, model_args, finetuning_args, is_trainable=True)


def test_model_preparation(assets, tmp_path):
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    model_args, _, _, finetuning_args, _ = get_train_args(
        train_config(assets, tmp_path / "o", losia_extra_modules="norm")
    )
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    blocks = {n for n in trainable if n.endswith("losia_block")}
    assert len(blocks) == 2 * 7 + 1
    assert trainable - blocks == {n for n, _ in model.named_parameters() if "norm" in n}
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in trainable)
    # Inference loads a losia output as the plain full model it is.
    plain = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    assert not any("losia" in n for n, _ in plain.named_parameters())


def test_command_line_style_arguments(assets, tmp_path):
    from llamafactory.hparams import get_train_args

    *_, finetuning_args, _ = get_train_args(
        [
            "--model_name_or_path",
            str(assets["model"]),
            "--stage",
            "sft",
            "--do_train",
            "--finetuning_type",
            "losia",
            "--losia_rank_factor",
            "0.5",
            "--losia_pro",
            "false",
            "--losia_mode",
            "sync",
            "--dataset",
            "demo_arithmetic",
            "--dataset_dir",
            str(assets["data"]),
            "--template",
            "chatml",
            "--output_dir",
            str(tmp_path / "o"),
            "--report_to",
            "none",
        ]
    )
    cfg = finetuning_args.losia_config
    assert (cfg.rank_factor, cfg.pro, cfg.mode) == (0.5, False, "sync")


def test_argument_reference_is_up_to_date():
    from pathlib import Path

    from losia_factory.llamafactory.arguments import arguments_markdown, arguments_table
    from losia_factory.llamafactory.methods import LOSIA, REGISTERED

    root = Path(__file__).resolve().parents[2]
    assert (root / "docs" / "arguments.md").read_text() == arguments_markdown(REGISTERED), "run: make docs"
    assert arguments_table(LOSIA) in (root / "README.md").read_text(), "run: make docs"


# -- finetuning_type: pilora ---------------------------------------------------------------------------------------


def pilora_parse(assets, tmp_path, **overrides):
    from llamafactory.hparams import get_train_args

    config = {k: v for k, v in train_config(assets, tmp_path / "out").items() if not k.startswith("losia_")}
    config.update(finetuning_type="pilora", **overrides)
    return get_train_args(config)


def test_pilora_arguments_build_the_config(assets, tmp_path):
    *_, finetuning_args, _ = pilora_parse(
        assets,
        tmp_path,
        pilora_rank=16,
        pilora_supplementary_rank=1,
        pilora_partition="cumulative",
        pilora_target="all",
    )
    config = finetuning_args.pilora_config
    assert (config.rank, config.supplementary_rank, config.partition, config.target_modules) == (
        16,
        1,
        "cumulative",
        "all",
    )
    assert finetuning_args.losia_config is None and finetuning_args.finetuning_type == "pilora"


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (dict(pilora_rank=0), "Invalid pilora_rank: pilora_rank must be an integer >= 1"),
        (dict(pilora_supplementary_rank=64), "Invalid pilora_supplementary_rank: pilora_supplementary_rank (64) must"),
        (dict(pilora_partition="median"), "pilora_partition"),
        (dict(pilora_threshold=1.5), "Invalid pilora_threshold"),
        (dict(losia_rank_factor=0.5), "losia_rank_factor only apply with `finetuning_type: losia`"),
        (dict(stage="dpo", dataset="demo_pairs"), "stage: dpo is not supported with finetuning_type: pilora"),
        (dict(resume_from_checkpoint="x"), "resume_from_checkpoint: x is not a checkpoint folder"),
        (dict(optim="adafactor"), "optim: adafactor is not tested with finetuning_type: pilora"),
        (dict(quantization_bit=4), "quantization_bit: 4 is not supported with finetuning_type: pilora"),
    ],
)
def test_pilora_bad_settings_are_refused(assets, tmp_path, overrides, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        pilora_parse(assets, tmp_path, **overrides)


def test_pilora_fields_need_finetuning_type_pilora(assets, tmp_path):
    with pytest.raises(ValueError, match=r"pilora_rank only apply with `finetuning_type: pilora`"):
        parse(assets, tmp_path, pilora_rank=8)


def test_pilora_refuses_deepspeed(assets, tmp_path, monkeypatch):
    from losia_factory.llamafactory.checks import check_train_args

    model_args, data_args, training_args, finetuning_args, _ = pilora_parse(assets, tmp_path)
    monkeypatch.setattr(training_args, "deepspeed", "ds_z2.json")
    with pytest.raises(ValueError, match="DeepSpeed and FSDP are not supported with finetuning_type: pilora"):
        check_train_args(model_args, data_args, training_args, finetuning_args)
