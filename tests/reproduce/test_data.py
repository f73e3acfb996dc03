"""Data preparation: converters against hand-written strings and lm-eval's own templates, sampling, manifest."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from losia_factory.reproduce import data
from losia_factory.reproduce.data import CONVERTERS, DataPreparationError, dataset_name, prepare_dataset

ROOT = Path(__file__).resolve().parents[2]

# One row per training set, in the dataset's own schema (as the Hub serves it).
DOCS = {
    "metamathqa": {"query": "What is 2+3?", "response": "2+3=5. The answer is: 5", "type": "GSM_AnsAug"},
    "magicoder": {"problem": "Reverse a string.", "solution": "def rev(s):\n    return s[::-1]", "lang": "python"},
    "alpaca_gpt4": {"instruction": "Add the numbers.", "input": "2, 3", "output": "5"},
    "commonsense170k": {
        "instruction": "Pick one.",
        "input": "",
        "output": "the answer is answer1",
        "answer": "answer1",
    },
    "arc_challenge": {
        "id": "q1",
        "question": "Which gas do plants take in?",
        "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]},
        "answerKey": "B",
    },
    "arc_easy": {
        "id": "q2",
        "question": "What melts ice?",
        "choices": {"text": ["heat", "cold"], "label": ["1", "2"]},
        "answerKey": "1",
    },
    "hellaswag": {
        "ind": 4,
        "activity_label": "Removing ice from car",
        "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes "
        "smiles.",
        "ctx_b": "then",
        "ctx": "unused",
        "endings": [", the man adds wax to the windshield and cuts it.", ", a person board a ski lift [title] now."],
        "source_id": "x",
        "split": "train",
        "split_type": "indomain",
        "label": "1",
    },
    "winogrande": {
        "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "1",
    },
    "piqa": {"goal": "How do I ready a guinea pig cage?", "sol1": "Use paper.", "sol2": "Use pepper.", "label": 0},
    "openbookqa": {
        "id": "7-980",
        "question_stem": "The sun is responsible for",
        "choices": {"text": ["puppies learning", "plants sprouting"], "label": ["A", "B"]},
        "answerKey": "B",
    },
    "social_iqa": {
        "context": "Tracy didn't go home that evening.",
        "question": "What does Tracy need to do before this?",
        "answerA": "make a new plan",
        "answerB": "go home",
        "answerC": "sleep",
        "label": "1",
    },
    "boolq": {"question": "is the sky blue", "passage": "The sky looks blue.", "idx": 0, "label": 1},
}

EXPECTED = {
    "metamathqa": ("What is 2+3?", "2+3=5. The answer is: 5", ""),
    "magicoder": ("Reverse a string.", "def rev(s):\n    return s[::-1]", ""),
    "alpaca_gpt4": ("Add the numbers.", "5", "2, 3"),
    "commonsense170k": ("Pick one.", "the answer is answer1", ""),
    "arc_challenge": ("Question: Which gas do plants take in?\nAnswer:", "carbon dioxide", ""),
    "arc_easy": ("Question: What melts ice?\nAnswer:", "heat", ""),
    "hellaswag": (
        "Removing ice from car: Then, the man writes over the snow covering the window of a car, and a woman "
        "wearing winter clothes smiles. Then",
        ", a person board a ski lift. now.",
        "",
    ),
    "winogrande": ("Sarah was a much better surgeon than Maria so Sarah", "always got the harder cases.", ""),
    "piqa": ("Question: How do I ready a guinea pig cage?\nAnswer:", "Use paper.", ""),
    "openbookqa": ("The sun is responsible for", "plants sprouting", ""),
    "social_iqa": (
        "Q: Tracy didn't go home that evening. What does Tracy need to do before this?\nA:",
        "make a new plan",
        "",
    ),
    "boolq": ("The sky looks blue.\nQuestion: is the sky blue?\nAnswer:", "yes", ""),
}


@pytest.mark.parametrize("key", sorted(DOCS))
def test_converter_gives_the_hand_written_strings(key):
    record = CONVERTERS[key](DOCS[key])
    assert (record["instruction"], record["output"], record["input"]) == EXPECTED[key]


def test_every_source_has_a_converter_and_a_test_row():
    assert set(CONVERTERS) == set(data.SOURCES) == set(DOCS)


# ---- the same strings as lm-eval's installed task definitions (an independent reference) -----------------------
LM_EVAL_TASKS = Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _lm_eval_yaml(relative: str) -> dict:
    return yaml.load((LM_EVAL_TASKS / relative).read_text(), Loader=_Loader)


def _module(relative: str):
    spec = importlib.util.spec_from_file_location(relative.replace("/", "_"), LM_EVAL_TASKS / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _render(template, doc):
    if isinstance(template, list):
        return template
    return jinja2.Template(template).render(**doc)


@pytest.mark.parametrize(
    ("key", "task_yaml"),
    [
        ("arc_challenge", "arc/arc_easy.yaml"),  # arc_challenge includes arc_easy's templates
        ("arc_easy", "arc/arc_easy.yaml"),
        ("piqa", "piqa/piqa.yaml"),
        ("openbookqa", "openbookqa/openbookqa.yaml"),
        ("social_iqa", "siqa/siqa.yaml"),
        ("boolq", "super_glue/boolq/default.yaml"),
    ],
)
def test_prompt_and_answer_equal_lm_evals_templates(key, task_yaml):
    task = _lm_eval_yaml(task_yaml)
    doc = DOCS[key]
    choices = task["doc_to_choice"]
    choices = choices if isinstance(choices, list) else yaml.safe_load(_render(choices, doc).replace("'", '"'))
    target = task["doc_to_target"]
    gold = doc[target] if target in doc else int(_render(target, doc))
    record = CONVERTERS[key](doc)
    prompt = doc[task["doc_to_text"]] if task["doc_to_text"] in doc else _render(task["doc_to_text"], doc)
    assert record["instruction"] == prompt
    assert record["output"] == choices[gold]


def test_hellaswag_equals_lm_evals_processing():
    import datasets

    processed = _module("hellaswag/utils.py").process_docs(datasets.Dataset.from_list([DOCS["hellaswag"]]))[0]
    record = CONVERTERS["hellaswag"](DOCS["hellaswag"])
    assert record["instruction"] == processed["query"]
    assert record["output"] == processed["choices"][processed["gold"]]


@pytest.mark.parametrize("answer", ["1", "2"])
def test_winogrande_equals_lm_evals_partial_evaluation(answer):
    module = _module("winogrande/preprocess_winogrande.py")
    doc = dict(DOCS["winogrande"], answer=answer)
    record = CONVERTERS["winogrande"](doc)
    assert record["instruction"] == module.doc_to_choice(doc)[module.doc_to_text(doc)]
    assert record["output"] == module.doc_to_target(doc)


# ---- preparing ----------------------------------------------------------------------------------------------
def _local_copy(tmp_path: Path, key: str, rows: int) -> Path:
    path = tmp_path / f"{key}.jsonl"
    base = DOCS[key]
    lines = []
    for i in range(rows):
        doc = dict(base)
        first = next(
            k
            for k in ("query", "question", "goal", "instruction", "problem", "sentence", "ctx_a", "question_stem")
            if k in doc
        )
        doc[first] = f"{doc[first]} #{i}" if key != "winogrande" else doc[first].replace(" so ", f" so ({i}) ")
        lines.append(json.dumps(doc))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prepare_writes_data_info_and_manifest(tmp_path):
    source = _local_copy(tmp_path, "metamathqa", 20)
    out = tmp_path / "data"
    (out).mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "other.json"}}))
    entry = prepare_dataset("metamathqa", out, samples=8, seed=1, source=source)
    records = json.loads((out / "metamathqa_8.json").read_text())
    assert len(records) == 8 == entry["rows"] and entry["source_rows"] == 20
    assert all(r["output"] == "2+3=5. The answer is: 5" and r["input"] == "" for r in records)
    assert len({r["instruction"] for r in records}) == 8
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "other.json"}  # other entries kept
    assert info["metamathqa_8"] == {
        "file_name": "metamathqa_8.json",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
    manifest = json.loads((out / "manifest.json").read_text())["metamathqa_8"]
    import hashlib

    assert manifest["sha256"] == hashlib.sha256((out / "metamathqa_8.json").read_bytes()).hexdigest()
    assert (manifest["samples"], manifest["seed"], manifest["source"]) == (8, 1, f"local:{source.resolve()}")


def test_samples_are_seeded_and_nested(tmp_path):
    source = _local_copy(tmp_path, "piqa", 30)
    take = lambda n, seed, d: [  # noqa: E731
        r["instruction"] for r in json.loads((tmp_path / d / f"{dataset_name('piqa', n)}.json").read_text())
    ]
    for n in (5, 10):
        prepare_dataset("piqa", tmp_path / "a", samples=n, seed=3, source=source)
        prepare_dataset("piqa", tmp_path / "b", samples=n, seed=3, source=source)
        prepare_dataset("piqa", tmp_path / "c", samples=n, seed=4, source=source)
    assert take(10, 3, "a") == take(10, 3, "b")  # same seed, same sample
    assert take(10, 3, "a")[:5] == take(5, 3, "a")  # the smaller sample is a prefix of the larger
    assert take(10, 3, "a") != take(10, 4, "c")


def test_second_call_is_skipped_and_a_changed_file_is_rebuilt(tmp_path, capsys):
    source = _local_copy(tmp_path, "boolq", 6)
    prepare_dataset("boolq", tmp_path / "d", source=source)
    first = (tmp_path / "d" / "boolq.json").read_text()
    prepare_dataset("boolq", tmp_path / "d", source=source)
    assert "up to date" in capsys.readouterr().out
    (tmp_path / "d" / "boolq.json").write_text("[]")
    prepare_dataset("boolq", tmp_path / "d", source=source)
    assert (tmp_path / "d" / "boolq.json").read_text() == first


def test_errors(tmp_path, monkeypatch):
    source = _local_copy(tmp_path, "metamathqa", 4)
    with pytest.raises(DataPreparationError, match="5 samples asked but the source has only 4 rows"):
        prepare_dataset("metamathqa", tmp_path / "e", samples=5, source=source)
    with pytest.raises(DataPreparationError, match="Unknown training set 'gsm8k'"):
        prepare_dataset("gsm8k", tmp_path / "e")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "no query column"}) + "\n")
    with pytest.raises(DataPreparationError, match=r"expected schema.*question"):
        prepare_dataset("metamathqa", tmp_path / "e", source=bad)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataPreparationError, match=r"meta-math/MetaMathQA cannot be downloaded.*--source metamathqa="):
        prepare_dataset("metamathqa", tmp_path / "e", samples=4)
    assert not (tmp_path / "e" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("GatedRepoError: 401 Client Error. Access to dataset x is restricted", "is gated: accept its terms"),
        ("ConnectionError: Couldn't reach 'x' on the Hub", "cannot be reached"),
    ],
)
def test_hub_errors_are_explained(tmp_path, monkeypatch, message, expected):
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def fail(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataPreparationError, match=expected):
        prepare_dataset("boolq", tmp_path / "f")


def test_cli(tmp_path):
    source = _local_copy(tmp_path, "winogrande", 12)
    cmd = [sys.executable, "scripts/prepare_data.py", "--dataset", "winogrande", "--data-dir", str(tmp_path / "g")]
    result = subprocess.run([*cmd, "--source", f"winogrande={source}"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "winogrande: 12 rows" in result.stdout
    rows = json.loads((tmp_path / "g" / "winogrande.json").read_text())
    assert {r["output"] for r in rows} == {"always got the harder cases."}
    result = subprocess.run(
        [sys.executable, "scripts/prepare_data.py", "--dataset", "winogrande:100", "--data-dir", str(tmp_path / "g"),
         "--source", f"winogrande={source}"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "100 samples asked" in result.stderr
    result = subprocess.run([*cmd[:3], "nope:5"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown key 'nope'" in result.stderr
