"""The whole pipeline on offline stand-ins: a tiny LLaMA, local data in the real schemas, local lm-eval tasks.

Real ``llamafactory-cli train`` / ``export`` and the real ``lm_eval`` command run; only the model, the data and the
test sets are small.
"""

from __future__ import annotations

import json

import pytest

from losia_factory.reproduce import pipeline as pipeline_module
from losia_factory.reproduce.pipeline import Pipeline, PipelineOptions
from losia_factory.reproduce.settings import CONTINUAL_ORDER
from tests.reproduce.test_data import DOCS, _local_copy

pytestmark = pytest.mark.slow
SMOKE = {  # a few CPU steps instead of 3 epochs of a 7B model
    "per_device_train_batch_size": "4",
    "cutoff_len": "96",
    "num_train_epochs": "1",
    "bf16": "false",
    "preprocessing_num_workers": "1",
    "dataloader_num_workers": "0",
    "logging_steps": "1",
}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_DISABLED", "true")


class Counting:
    def __init__(self):
        self.calls = []

    def __call__(self, argv, cwd):
        self.calls.append(argv[:2])
        pipeline_module._run(argv, cwd)


def _options(tmp_path, tiny_model, tiny_tasks, only, sources, tasks, **extra):
    return PipelineOptions(
        root=tmp_path,
        only=only,
        model_paths={"llama2_7b": str(tiny_model)},
        train_overrides={**SMOKE, **extra},
        data_sources=sources,
        max_samples=16,
        eval_batch_size="4",
        eval_device="cpu",
        eval_dtype="float32",
        task_map=tasks,
        include_paths=(str(tiny_tasks),),
    )


def test_table3_pair_prepare_train_evaluate_collect_and_resume(tmp_path, tiny_model, tiny_tasks, offline):
    source = _local_copy(tmp_path, "metamathqa", 24)
    only = ("llama2_7b-metamathqa-losia", "llama2_7b-metamathqa-losia-wds")
    tasks = {"gsm8k_5shot": "tiny_gsm8k", "gsm8k_cot_0shot": "tiny_gsm8k"}
    options = _options(tmp_path, tiny_model, tiny_tasks, only, {"metamathqa": str(source)}, tasks, losia_time_slot="1")
    runner = Counting()
    results = Pipeline("losia_t3", options, run_command=runner).run()
    assert runner.calls == [["llamafactory-cli", "train"]] * 2
    manifest = json.loads((tmp_path / "data/paper/manifest.json").read_text())
    assert manifest["metamathqa_50k"]["rows"] == 16  # capped by max_samples for the smoke run
    for name, table in (("llama2_7b-metamathqa-losia", "losia_t1"), ("llama2_7b-metamathqa-losia-wds", "losia_t3")):
        out = tmp_path / "saves/paper" / table / name
        assert (out / "model.safetensors").is_file() and (out / "train_results.json").is_file()
        reselections = [json.loads(line) for line in (out / "losia_log.jsonl").read_text().splitlines()]
        assert any(r.get("event") == "reselect" for r in reselections)
        summary = json.loads((out / "eval/summary.json").read_text())
        assert set(summary) >= {"gsm8k_5shot"} and all(0 <= v <= 100 for v in summary.values())
    values = results["tables"]["losia_t3"]["values"]
    assert set(values) == {"LoSiA", "WDS"} and all("gsm8k" in v for v in values.values())
    assert "| LoSiA | 44.66 → " in (tmp_path / "saves/paper/losia_t3.md").read_text()

    again = Counting()
    Pipeline("losia_t3", options, run_command=again).run()
    assert again.calls == []  # prepared, trained and evaluated: nothing re-run


def test_continual_lora_stage_starts_from_the_merged_previous_stage(tmp_path, tiny_model, tiny_tasks, offline):
    sources = {k: str(_local_copy(tmp_path, k, 20)) for k in ("hellaswag", "piqa")}
    tasks = dict.fromkeys(CONTINUAL_ORDER, "tiny_arc")
    only = ("llama2_7b-hellaswag-lora-lr1e-4", "llama2_7b-continual-lora-2_piqa")
    runner = Counting()
    results = Pipeline("losia_t13", _options(tmp_path, tiny_model, tiny_tasks, only, sources, tasks), runner).run()
    assert runner.calls == [
        ["llamafactory-cli", "train"],
        ["llamafactory-cli", "export"],
        ["llamafactory-cli", "train"],
    ]
    stage1 = tmp_path / "saves/paper/losia_t2/llama2_7b-hellaswag-lora-lr1e-4"
    assert (stage1 / "adapter_model.safetensors").is_file() and (stage1 / "merged/config.json").is_file()
    stage2 = tmp_path / "saves/paper/losia_t13/llama2_7b-continual-lora-2_piqa"
    config = json.loads((stage2 / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(stage1 / "merged")
    row = results["tables"]["losia_t13"]["values"]["Seq-LoRA / hellaswag"]
    assert set(row) == {"stage_1", "stage_2", "st"} and row["st"] == row["stage_1"]  # stage 1 is the ST run
    assert DOCS["hellaswag"]["activity_label"] in (tmp_path / "data/paper/hellaswag.json").read_text()
