"""The import hook: active in every process of the environment, switchable off, loud on a missing symbol."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from losia_factory.llamafactory import patches

PROBE = (
    "import sys, llamafactory.hparams.finetuning_args as m; "
    "print(hasattr(m.FinetuningArguments, 'losia_base'), any('losia' in n for n in sys.modules))"
)


def _probe(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LOSIA_FACTORY_DISABLE"} | env_extra
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_new_processes_get_the_patch_and_the_switch_turns_it_off():
    assert _probe({}) == "True True"
    assert _probe({"LOSIA_FACTORY_DISABLE": "1"}) == "False False"


def test_patching_is_idempotent():
    import llamafactory.hparams.parser as parser

    before = parser._parse_train_args
    patches.patch_parser(parser)
    assert parser._parse_train_args is before
    assert not hasattr(before.__wrapped__, "__wrapped__")


def test_missing_symbol_names_the_version_and_the_way_out():
    fake = types.ModuleType("llamafactory.hparams.parser")
    with pytest.raises(
        ImportError,
        match=r"_parse_train_args in the installed llamafactory .*llamafactory==0\.9\.5.*"
        r"LOSIA_FACTORY_DISABLE=1",
    ):
        patches.patch_parser(fake)
