"""LosiaConfig validation: every bad value is refused with a message naming the field."""

from __future__ import annotations

import dataclasses

import pytest

from losia_factory.core import LosiaConfig, LosiaConfigError


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(rank_factor=0.0), "rank_factor"),
        (dict(rank_factor=1.5), "rank_factor"),
        (dict(rank_factor=float("nan")), "rank_factor"),
        (dict(time_slot=0), "time_slot"),
        (dict(time_slot=2.5), "time_slot"),
        (dict(output_rank_factor=-0.1), "output_rank_factor"),
        (dict(output_rank_factor=2), "output_rank_factor"),
        (dict(importance="fisher"), "importance"),
        (dict(ema_beta1=0.0), "ema_beta1"),
        (dict(ema_beta2=1.0), "ema_beta2"),
        (dict(ema_beta1="0.85"), "ema_beta1"),
        (dict(mode="random"), "mode"),
        (dict(pro="yes"), "pro"),
        (dict(target_modules=()), "target_modules"),
        (dict(extra_trainable=("",)), "extra_trainable"),
        (dict(selection="top"), "selection"),
        (dict(importance_dtype="int8"), "importance_dtype"),
        (dict(seed="1"), "seed"),
        (dict(rewarm="no"), "rewarm"),
        (dict(adam_reset="all"), "adam_reset"),
        (dict(output_order="middle"), "output_order"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(LosiaConfigError, match=field) as info:
        LosiaConfig(**kwargs)
    assert info.value.field == field


def test_defaults_follow_the_paper():
    cfg = LosiaConfig()
    assert cfg.rank_factor == 0.125 and cfg.ema_betas == (0.85, 0.85) and cfg.mode == "async"
    assert cfg.importance == "sensitivity" and cfg.selection == "best"


def test_comma_strings_and_round_trip():
    cfg = LosiaConfig(target_modules="q_proj, v_proj", extra_trainable="*norm*")
    assert cfg.target_modules == ("q_proj", "v_proj") and cfg.extra_trainable == ("*norm*",)
    assert LosiaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown LosiaConfig fields"):
        LosiaConfig.from_dict({"rank": 8})


def test_plain_extra_names_match_every_parameter_containing_them():
    cfg = LosiaConfig(extra_trainable="norm, *.bias,embed_tokens")
    assert cfg.extra_trainable == ("*norm*", "*.bias", "*embed_tokens*")
    assert LosiaConfig(extra_trainable=cfg.extra_trainable).extra_trainable == cfg.extra_trainable  # idempotent


def test_configs_saved_with_the_ema_pair_still_load():
    saved = {**LosiaConfig().to_dict(), "ema_betas": [0.8, 0.9]}
    del saved["ema_beta1"], saved["ema_beta2"]
    cfg = LosiaConfig.from_dict(saved)
    assert (cfg.ema_beta1, cfg.ema_beta2, cfg.ema_betas) == (0.8, 0.9, (0.8, 0.9))


def test_every_field_has_help_in_the_docstring():
    doc = LosiaConfig.__doc__
    for f in dataclasses.fields(LosiaConfig):
        assert f.metadata.get("help"), f.name
        assert f"{f.name}:" in doc, f.name
