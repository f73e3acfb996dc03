"""scripts/reproduce.py: the stages, their order, the filters, resuming, and collecting the tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from losia_factory.reproduce import pipeline as pipeline_module
from losia_factory.reproduce.pipeline import Pipeline, PipelineError, PipelineOptions, collect
from losia_factory.reproduce.settings import TABLES, experiments_for

ROOT = Path(__file__).resolve().parents[2]


def dry_run(table: str, *extra: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "scripts/reproduce.py", table, "--dry-run", "--root", "/runs", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if not line.startswith("[reproduce]")]


@pytest.mark.parametrize("table", TABLES)
def test_dry_run_prints_every_command_of_the_table(table):
    lines = dry_run(table)
    exps = experiments_for(table)
    trains = [line for line in lines if line.startswith("llamafactory-cli train ")]
    assert len(trains) == len(exps)
    for exp, line in zip(exps, trains):
        assert f"{ROOT}/{exp.recipe_path} " in line
        assert f"output_dir=/runs/{exp.output_dir}" in line and "dataset_dir=/runs/data/paper" in line
    prepared = {line.split("--dataset ")[1].split()[0] for line in lines if "scripts/prepare_data.py" in line}
    assert prepared == {f"{k}:{n}" if n else k for e in exps for k, n in e.train_sets}
    evals = [line for line in lines if line.startswith(("lm_eval ", "lm-eval ")) or " -m lm_eval " in line]
    assert len(evals) >= len(exps)
    assert lines[-1].endswith(f"--tables {table}") and "scripts/make_tables.py" in lines[-1]


def test_dry_run_of_table1_math_row_evaluates_gsm8k_both_ways():
    lines = dry_run("losia_t1", "--only", "llama2_7b-metamathqa-losia")
    text = "\n".join(lines)
    assert "gsm8k" in text and "gsm8k_cot_zeroshot" in text
    assert "pretrained=/runs/saves/paper/losia_t1/llama2_7b-metamathqa-losia" in text


def test_continual_learning_merges_each_lora_stage_before_the_next():
    lines = [line for line in dry_run("losia_t13", "--model", "llama2_7b") if line.startswith("llamafactory-cli ")]

    def position(verb: str, run: str) -> int:
        return next(i for i, line in enumerate(lines) if line.split()[1] == verb and f"{run} " in line + " ")

    stages = ["losia_t2/llama2_7b-hellaswag-lora-lr1e-4"] + [
        f"losia_t13/llama2_7b-continual-lora-{i}_{t}" for i, t in enumerate(("piqa", "boolq", "social_iqa"), start=2)
    ]
    for k, previous in enumerate(stages, start=2):
        out = f"/runs/saves/paper/{previous}"
        nxt = next(line for line in lines if line.split()[1] == "train" and f"-lora-{k}_" in line)
        assert position("train", f"output_dir={out}") < position("export", f"--adapter_name_or_path={out}")
        assert position("export", f"--adapter_name_or_path={out}") < lines.index(nxt)
        assert f"model_name_or_path={out}/merged" in nxt
    assert sum(line.split()[1] == "export" for line in lines) == 4  # stages 1-4 feed the next; stage 5 is last
    assert all("-losia-" not in line for line in lines if line.split()[1] == "export")  # LoSiA saves a full model
    losia3 = next(line for line in lines if "continual-losia-3_boolq.yaml" in line)
    assert "model_name_or_path=/runs/saves/paper/losia_t13/llama2_7b-continual-losia-2_piqa " in losia3 + " "


def test_filters_and_their_errors():
    assert len(Pipeline("losia_t1", PipelineOptions(models=("llama2_13b",))).selected) == 12
    assert len(Pipeline("losia_t1", PipelineOptions(datasets=("magicoder",))).selected) == 16
    with pytest.raises(PipelineError, match="--only: nope not in table losia_t2"):
        Pipeline("losia_t2", PipelineOptions(only=("nope",)))
    with pytest.raises(PipelineError, match="--model: gemma_2b not used by table losia_t2"):
        Pipeline("losia_t2", PipelineOptions(models=("gemma_2b",)))
    with pytest.raises(PipelineError, match="--model-path: unknown model key"):
        Pipeline("losia_t2", PipelineOptions(model_paths={"llama": "/x"}))
    result = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "losia_t3", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--only: nope" in result.stderr


def test_a_failing_stage_exits_with_its_message(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "scripts/reproduce.py", "losia_t3", "--only", "llama2_7b-metamathqa-losia-wds"]
    result = subprocess.run([*cmd, "--root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert "error: meta-math/MetaMathQA cannot be downloaded" in result.stderr and "Traceback" not in result.stderr
    listing = subprocess.run([*cmd, "--list"], cwd=ROOT, capture_output=True, text=True)
    assert listing.returncode == 0 and "recipes/paper/losia_t3/llama2_7b-metamathqa-losia-wds.yaml" in listing.stdout


class FakeRunner:
    """Stands in for llamafactory-cli: training writes what LLaMA-Factory writes at the end, export a config."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv, cwd):
        self.calls.append(argv)
        if argv[1] == "train":
            out = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")))
            out.mkdir(parents=True, exist_ok=True)
            (out / "train_results.json").write_text(json.dumps({"train_runtime": 2.0}))
            (out / "trainer_state.json").write_text(json.dumps({"num_input_tokens_seen": 4000}))
        elif argv[1] == "export":
            out = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--export_dir=")))
            out.mkdir(parents=True)
            (out / "config.json").write_text("{}")


@pytest.fixture
def fake_stages(monkeypatch):
    """Data preparation and evaluation replaced by recorders (their own tests cover them)."""
    from losia_factory.reproduce import data, evaluation

    prepared, evaluated = [], []
    monkeypatch.setattr(data, "prepare_dataset", lambda key, data_dir, **kw: prepared.append((key, kw["samples"])))

    def fake_evaluate(model, columns, output_dir, **kwargs):
        evaluated.append((model, kwargs.get("adapter_dir"), tuple(columns)))
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "summary.json").write_text(json.dumps({c: 50.0 for c in columns}))
        return {c: 50.0 for c in columns}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    return prepared, evaluated


def test_stages_run_once_and_a_second_run_skips_them(tmp_path, fake_stages):
    prepared, evaluated = fake_stages
    runner = FakeRunner()
    options = PipelineOptions(root=tmp_path, only=("llama2_7b-metamathqa-losia", "llama2_7b-metamathqa-losia-wds"),
                              max_samples=16, model_paths={"llama2_7b": "/tiny"})  # fmt: skip
    results = Pipeline("losia_t3", options, run_command=runner).run()
    assert prepared == [("metamathqa", 16)]
    assert [c[1] for c in runner.calls] == ["train", "train"]
    assert all("model_name_or_path=/tiny" in c for c in runner.calls)
    assert [e[2] for e in evaluated] == [("gsm8k_5shot", "gsm8k_cot_0shot"), ("gsm8k_5shot",)]  # Table 1 run: both
    assert results["tables"]["losia_t3"]["values"] == {"LoSiA": {"gsm8k": 50.0}, "WDS": {"gsm8k": 50.0}}
    assert (tmp_path / "saves/paper/losia_t3.md").is_file()
    assert json.loads((tmp_path / "saves/paper/results.json").read_text())["tables"]["losia_t3"]
    Pipeline("losia_t3", options, run_command=runner).run()
    assert len(runner.calls) == 2  # training skipped; evaluation resumes inside evaluate() (its own test)


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, fake_stages):
    runner = FakeRunner()
    options = PipelineOptions(root=tmp_path, only=("llama2_7b-metamathqa-losia",))
    out = tmp_path / "saves/paper/losia_t1/llama2_7b-metamathqa-losia"
    for step in (2, 10, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
    Pipeline("losia_t1", options, run_command=runner).run()
    assert f"resume_from_checkpoint={out}/checkpoint-10" in runner.calls[0]
    assert "overwrite_output_dir=false" in runner.calls[0]


def test_a_stage_without_its_predecessor_is_refused(tmp_path, fake_stages):
    options = PipelineOptions(root=tmp_path, only=("llama2_7b-continual-losia-3_boolq",))
    with pytest.raises(PipelineError, match="run llama2_7b-continual-losia-2_piqa first"):
        Pipeline("losia_t13", options, run_command=FakeRunner()).run()


def test_a_failed_training_stops_with_the_command(tmp_path, fake_stages):
    def failing(argv, cwd):
        raise PipelineError("command failed with exit code 1: llamafactory-cli train ...")

    with pytest.raises(PipelineError, match="exit code 1"):
        Pipeline("losia_t3", PipelineOptions(root=tmp_path, only=("llama2_7b-metamathqa-losia",)), failing).run()
    assert not (tmp_path / "saves/paper/losia_t1/llama2_7b-metamathqa-losia" / pipeline_module.MARKER).exists()


def _write_summary(root: Path, exp_name: str, table: str, values: dict[str, float]) -> None:
    exp = next(e for e in experiments_for(table) if e.name == exp_name)
    (root / exp.output_dir / "eval").mkdir(parents=True, exist_ok=True)
    (root / exp.output_dir / "eval" / "summary.json").write_text(json.dumps(values))


def test_collect_keeps_the_better_learning_rate_of_table2(tmp_path):
    _write_summary(tmp_path, "llama2_7b-piqa-losia-lr5e-5", "losia_t2", {"piqa": 80.1})
    _write_summary(tmp_path, "llama2_7b-piqa-losia-lr2e-4", "losia_t2", {"piqa": 81.5})
    _write_summary(tmp_path, "llama2_7b-boolq-lora-lr1e-4", "losia_t2", {"boolq": 88.0})
    table = collect(tmp_path, ["losia_t2"])["tables"]["losia_t2"]
    assert table["values"] == {"LoSiA": {"piqa": 81.5}, "LoRA": {"boolq": 88.0}}
    assert table["runs"]["LoSiA"]["piqa"].endswith("llama2_7b-piqa-losia-lr2e-4")


# LoSiA paper Table 13 (rows: task; columns: stage 1..5, then ST).
TABLE13 = {
    "Seq-LoRA": {
        "hellaswag": [59.86, 55.64, 59.10, 57.86, 54.36, 59.86],
        "piqa": [76.01, 80.52, 77.86, 78.73, 77.64, 79.33],
        "boolq": [77.80, 73.27, 86.30, 80.12, 75.93, 88.07],
        "social_iqa": [45.80, 47.80, 45.85, 59.52, 46.11, 56.86],
        "winogrande": [64.25, 68.35, 68.82, 69.93, 79.08, 73.88],
    },
}


def test_table5_is_computed_from_the_collected_table13(tmp_path):
    by_task = TABLE13["Seq-LoRA"]
    tasks = list(by_task)
    stage_runs = ["llama2_7b-hellaswag-lora-lr1e-4"] + [
        f"llama2_7b-continual-lora-{i}_{t}" for i, t in enumerate(tasks[1:], start=2)
    ]
    for stage, name in enumerate(stage_runs):
        table = "losia_t2" if stage == 0 else "losia_t13"
        values = {t: by_task[t][stage] for t in tasks}  # stage 1 is HellaSwag's single-task run (ST)
        _write_summary(tmp_path, name, table, values)
    for t in tasks[1:]:  # the other single-task runs (ST)
        _write_summary(tmp_path, f"llama2_7b-{t}-lora-lr1e-4", "losia_t2", {t: by_task[t][5]})
    t13 = collect(tmp_path, ["losia_t13"])["tables"]["losia_t13"]["values"]
    assert t13["Seq-LoRA / boolq"] == {f"stage_{i + 1}": v for i, v in enumerate(by_task["boolq"][:5])} | {"st": 88.07}
    t5 = collect(tmp_path, ["losia_t5"])["tables"]["losia_t5"]["values"]
    assert set(t5) == {"Seq-LoRA"}  # Seq-LoSiA has no results yet
    assert t5["Seq-LoRA"]["ap"] == pytest.approx(66.62, abs=0.01)
    assert t5["Seq-LoRA"]["bwt"] == pytest.approx(-8.04, abs=0.01)
