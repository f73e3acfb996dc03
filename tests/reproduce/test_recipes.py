"""The committed recipes/paper/ files are exactly what the settings table generates, and carry the papers' values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from losia_factory.reproduce.recipes import check_recipes, format_value, render, write_recipes
from losia_factory.reproduce.settings import experiments

ROOT = Path(__file__).resolve().parents[2]


def test_committed_recipes_match_the_generator():
    problems = check_recipes(ROOT)
    assert not problems, "run `make recipes`:\n" + "\n".join(problems[:5])


def test_check_reports_edits_missing_and_stale_files(tmp_path):
    write_recipes(tmp_path)
    assert check_recipes(tmp_path) == []
    first = tmp_path / experiments()[0].recipe_path
    first.write_text(first.read_text().replace("learning_rate: 1.0e-5", "learning_rate: 2.0e-5"))
    (tmp_path / experiments()[1].recipe_path).unlink()
    (tmp_path / "recipes/paper/losia_t1/hand_written.yaml").write_text("stage: sft\n")
    problems = check_recipes(tmp_path)
    assert len(problems) == 3
    assert "-learning_rate: 2.0e-5" in problems[0] and "+learning_rate: 1.0e-5" in problems[0]
    assert problems[1].startswith("missing: ") and problems[2].startswith("not generated")
    write_recipes(tmp_path)  # rewrites the edit, restores the missing file, removes the stale one
    assert check_recipes(tmp_path) == []


def test_generator_script_check_mode():
    result = subprocess.run(
        [sys.executable, "scripts/gen_paper_recipes.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        0,
        3,
        2048,
        6e-5,
        1e-4,
        5e-5,
        2.0,
        0.125,
        1 / 64,
        1 / 3,
        3.0,
        0.1,
        1e5,
        "all",
        "q_proj,k_proj",
        "a: b",
    ],
)
def test_values_round_trip_through_yaml(value):
    from omegaconf import OmegaConf  # what llamafactory-cli reads recipes with

    text = f"key: {format_value(value)}\n"
    assert yaml.safe_load(text)["key"] == value
    assert OmegaConf.to_container(OmegaConf.create(text))["key"] == value


@pytest.mark.parametrize("exp", experiments(), ids=lambda e: e.name)
def test_recipe_text_reads_back_as_the_settings(exp):
    assert yaml.safe_load(render(exp)) == exp.args
