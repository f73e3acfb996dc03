"""lm-eval commands for every paper column, pass@k, continual-learning metrics, and a real lm-eval run offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from losia_factory.reproduce import evaluation
from losia_factory.reproduce.evaluation import (
    COLUMNS,
    TASKS_DIR,
    EvaluationError,
    continual_metrics,
    evaluate,
    lm_eval_commands,
    suite_for,
)
from losia_factory.reproduce.lm_eval_tasks.code_utils import pass_at_1, pass_at_10, pass_at_k_estimate, passes
from losia_factory.reproduce.settings import COMMONSENSE


def _tasks(argv):
    return argv[argv.index("--tasks") + 1].split(",")


def _shots(argv):
    return int(argv[argv.index("--num_fewshot") + 1])


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        ("math", [(0, ["gsm8k_cot_zeroshot"]), (5, ["gsm8k"])]),
        ("code", [(3, ["mbpp", "losia_mbpp_pass_at_10"])]),
        ("general", [(0, ["mmlu"]), (5, ["mmlu_generative"])]),
        ("commonsense8", [(0, list(COMMONSENSE))]),
        ("hellaswag", [(0, ["hellaswag"])]),
    ],
)
def test_commands_per_suite(suite, expected, tmp_path):
    commands = lm_eval_commands("/m", suite_for(suite), tmp_path)
    assert [(_shots(c), _tasks(c)) for c in commands] == expected
    for argv in commands:
        assert argv[:5] == ["lm_eval", "--model", "hf", "--model_args", "pretrained=/m,dtype=bfloat16"]
        assert argv[argv.index("--output_path") + 1] == str(tmp_path / f"lm_eval_{_shots(argv)}shot")
    code = suite == "code"
    assert any("--confirm_run_unsafe_code" in c for c in commands) == code
    assert any(str(TASKS_DIR) in c for c in commands) == code  # our pass@10 task needs its folder


def test_command_options_and_adapter(tmp_path):
    options = dict(adapter_dir="/a", batch_size=8, device="cuda:0", dtype="float32", limit=50, include_paths=["/t"])
    (argv,) = lm_eval_commands("base", ["boolq"], tmp_path, task_map={"boolq": "my_boolq"}, **options)
    assert argv[argv.index("--model_args") + 1] == "pretrained=base,dtype=float32,peft=/a"
    assert _tasks(argv) == ["my_boolq"]
    for flag, value in (("--batch_size", "8"), ("--device", "cuda:0"), ("--limit", "50"), ("--include_path", "/t")):
        assert argv[argv.index(flag) + 1] == value


def test_unknown_column_and_suite():
    with pytest.raises(EvaluationError, match="Unknown metric column 'gsm8k'"):
        lm_eval_commands("/m", ["gsm8k"], "/o")
    with pytest.raises(EvaluationError, match="No evaluation suite"):
        suite_for("wikitext")
    assert suite_for("metamathqa") == ("gsm8k_5shot", "gsm8k_cot_0shot")


def test_every_paper_metric_column_is_evaluated():
    from losia_factory.reproduce.tables import load_paper_results

    measured = {"gsm8k_5shot", "gsm8k_cot_0shot", "mbpp_pass@1", "mbpp_pass@10", "mmlu_0shot_ppl", "mmlu_5shot_gen"}
    tables = load_paper_results()
    assert measured <= set(tables["losia_t1"]["columns"]) and measured <= set(COLUMNS)
    assert set(tables["losia_t2"]["avg_of"]) <= set(COLUMNS)


def test_our_task_folder_is_valid_for_lm_eval():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR))
    assert "losia_mbpp_pass_at_10" in manager.all_tasks
    for column in COLUMNS.values():  # every built-in task we name exists in the installed lm-eval
        assert column.task in manager.all_tasks, column.task


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(10, 3, 1, 0.3), (10, 3, 10, 1.0), (10, 0, 10, 0.0), (10, 10, 1, 1.0), (5, 2, 2, 1 - 3 / 10), (1, 1, 1, 1.0)],
)
def test_pass_at_k_estimator(n, c, k, expected):
    assert pass_at_k_estimate(n, c, k) == pytest.approx(expected)


def test_pass_at_k_estimator_equals_sampling_without_replacement():
    import itertools

    n, c, k = 6, 2, 3  # the probability that some k of the n samples include a correct one, by enumeration
    subsets = list(itertools.combinations([1] * c + [0] * (n - c), k))
    assert pass_at_k_estimate(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k_estimate(3, 4, 1)


def test_candidate_execution():
    tests = "assert add(2, 3) == 5"
    assert passes("def add(a, b):\n    return a + b", tests)
    assert not passes("def add(a, b):\n    return a * b", tests)
    assert not passes("def add(a, b)\n    return a + b", tests)  # syntax error
    assert not passes("while True:\n    pass", tests, timeout=1.0)
    good, bad = "def add(a, b):\n    return a + b", "def add(a, b):\n    return 0"
    assert pass_at_1([tests], [[good]]) == 1.0 and pass_at_1([tests], [[bad]]) == 0.0
    assert pass_at_10([tests], [[good] + [bad] * 9]) == 1.0
    assert pass_at_1([tests], [[good] + [bad] * 3]) == pytest.approx(0.25)


def test_continual_metrics_by_hand():
    matrix = [[50.0, 10.0, 20.0], [40.0, 60.0, 30.0], [45.0, 55.0, 70.0]]
    single = [52.0, 58.0, 66.0]
    assert continual_metrics(matrix, single) == {
        "ap": pytest.approx((45 + 55 + 70) / 3, abs=1e-4),
        "fwt": pytest.approx(((50 - 52) + (60 - 58) + (70 - 66)) / 3, abs=1e-4),
        "bwt": pytest.approx(((45 - 50) + (55 - 60)) / 2, abs=1e-4),
    }
    with pytest.raises(ValueError):
        continual_metrics([[1.0]], [1.0])


# LoSiA paper Table 13 (task rows; stages #1..#5, then ST) and the Table 5 it gives.
TABLE13 = {
    "Seq-LoRA": [
        [59.86, 55.64, 59.10, 57.86, 54.36, 59.86],
        [76.01, 80.52, 77.86, 78.73, 77.64, 79.33],
        [77.80, 73.27, 86.30, 80.12, 75.93, 88.07],
        [45.80, 47.80, 45.85, 59.52, 46.11, 56.86],
        [64.25, 68.35, 68.82, 69.93, 79.08, 73.88],
    ],
    "Seq-LoSiA": [
        [63.72, 61.89, 61.11, 60.37, 56.43, 63.72],
        [78.29, 79.49, 79.82, 79.38, 77.75, 81.50],
        [77.52, 70.76, 83.24, 82.54, 81.99, 84.13],
        [47.80, 48.26, 48.26, 59.93, 56.04, 61.05],
        [68.51, 67.88, 68.51, 71.82, 80.19, 77.19],
    ],
}
TABLE5 = {"Seq-LoRA": (66.62, 1.46, -8.04), "Seq-LoSiA": (70.48, -0.20, -3.54)}


@pytest.mark.parametrize("method", sorted(TABLE13))
def test_continual_metrics_reproduce_the_papers_table5_from_its_table13(method):
    rows = TABLE13[method]
    matrix = [[rows[task][stage] for task in range(5)] for stage in range(5)]
    got = continual_metrics(matrix, [r[5] for r in rows])
    assert (got["ap"], got["fwt"], got["bwt"]) == pytest.approx(TABLE5[method], abs=0.006)


def _fake_lm_eval(calls, values, returncode=0):
    def run(argv, env=None):
        calls.append(argv)
        assert env["HF_ALLOW_CODE_EVAL"] == "1"
        out = Path(argv[argv.index("--output_path") + 1]) / "model"
        out.mkdir(parents=True, exist_ok=True)
        results = {t: values[t] for t in argv[argv.index("--tasks") + 1].split(",") if t in values}
        (out / "results_2026-01-01T00-00-00.json").write_text(json.dumps({"results": results}))
        return type("Done", (), {"returncode": returncode})()

    return run


def test_evaluate_writes_the_summary_and_resumes(tmp_path, monkeypatch):
    calls = []
    values = {
        "gsm8k": {"exact_match,flexible-extract": 0.4466},
        "gsm8k_cot_zeroshot": {"exact_match,flexible-extract": 0.5},
    }
    monkeypatch.setattr(evaluation.subprocess, "run", _fake_lm_eval(calls, values))
    summary = evaluate("/m", ["gsm8k_5shot", "gsm8k_cot_0shot"], tmp_path)
    assert summary == {"gsm8k_5shot": 44.66, "gsm8k_cot_0shot": 50.0}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert len(calls) == 2
    evaluate("/m", ["gsm8k_5shot", "gsm8k_cot_0shot"], tmp_path)
    assert len(calls) == 2  # nothing left to do
    evaluate("/m", ["gsm8k_5shot"], tmp_path, skip_done=False)
    assert len(calls) == 3


def test_evaluate_errors_keep_what_is_done(tmp_path, monkeypatch):
    calls = []
    values = {"gsm8k_cot_zeroshot": {"exact_match,flexible-extract": 0.5}, "gsm8k": {"exact_match,strict-match": 0.1}}
    monkeypatch.setattr(evaluation.subprocess, "run", _fake_lm_eval(calls, values))
    with pytest.raises(EvaluationError, match="no 'exact_match,flexible-extract' for task 'gsm8k'"):
        evaluate("/m", ["gsm8k_5shot", "gsm8k_cot_0shot"], tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == {"gsm8k_cot_0shot": 50.0}  # the 0-shot run
    monkeypatch.setattr(evaluation.subprocess, "run", _fake_lm_eval(calls, values, returncode=3))
    with pytest.raises(EvaluationError, match="lm-eval failed with exit code 3: lm_eval --model hf"):
        evaluate("/m", ["boolq"], tmp_path)


@pytest.mark.slow
def test_lm_eval_runs_offline_on_a_tiny_model(tiny_model, tiny_tasks, tmp_path, monkeypatch):
    """The real lm_eval CLI on local stand-ins in the real schemas: generation (GSM8K, 5-shot), log-likelihood
    (ARC) and executed programs (MBPP, sampled, our pass@k); the summary holds lm-eval's own numbers x 100."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    columns = ["gsm8k_5shot", "arc_challenge", "mbpp_pass@10"]
    task_map = {"gsm8k_5shot": "tiny_gsm8k", "arc_challenge": "tiny_arc", "mbpp_pass@10": "tiny_mbpp"}
    kwargs = dict(batch_size=4, device="cpu", dtype="float32", task_map=task_map, include_paths=[str(tiny_tasks)])
    summary = evaluate(str(tiny_model), columns, tmp_path, **kwargs)
    assert set(summary) == set(columns)
    raw = {}
    for shots in ("0", "3", "5"):  # one lm-eval run per few-shot count
        (results,) = list((tmp_path / f"lm_eval_{shots}shot").rglob("results_*.json"))
        raw.update(json.loads(results.read_text())["results"])
    assert summary["gsm8k_5shot"] == pytest.approx(100 * raw["tiny_gsm8k"]["exact_match,flexible-extract"])
    assert summary["arc_challenge"] == pytest.approx(100 * raw["tiny_arc"]["acc,none"])
    assert summary["mbpp_pass@10"] == pytest.approx(100 * raw["tiny_mbpp"]["pass_at_10,candidates"])
    assert all(0.0 <= v <= 100.0 for v in summary.values())
    assert raw["tiny_gsm8k"]["exact_match,flexible-extract"] is not None
    stamp = os.path.getmtime(tmp_path / "summary.json")
    assert evaluate(str(tiny_model), columns, tmp_path, **kwargs) == summary  # resumed: nothing re-run
    assert os.path.getmtime(tmp_path / "summary.json") == stamp
