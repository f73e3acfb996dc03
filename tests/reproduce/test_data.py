"""Data preparation: converters vs hand-written strings and lm-eval's own tasks, sampling, manifest, errors, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from losia_factory.reproduce.data import (
    SOURCES,
    DataPreparationError,
    dataset_name,
    hellaswag_clean,
    prepare_dataset,
    register_dataset,
    sample_indices,
)

ROOT = Path(__file__).resolve().parents[2]
COMMONSENSE = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "social_iqa", "winogrande"]


# ---- rows in each dataset's own schema (as the hub serves them) ---------------------------------------------------
def _arc_row(i: int) -> dict:
    labels = ["1", "2", "3", "4"] if i % 3 == 0 else ["A", "B", "C", "D"]  # ARC has both label styles
    return {
        "id": f"Mercury_{i}",
        "question": f"Which planet is number {i}?",
        "choices": {"text": [f"planet {i}-{k}" for k in range(4)], "label": labels},
        "answerKey": labels[i % 4],
    }


ROWS = {
    "metamathqa": lambda i: {"type": "GSM_AnsAug", "query": f"What is {i}+{i}?", "original_question": "q",
                             "response": f"{i}+{i}={2 * i}. The answer is: {2 * i}"},
    "magicoder": lambda i: {"lang": "python", "raw_index": i, "index": i, "seed": "def f(): pass",
                            "openai_fingerprint": "fp", "problem": f"Write f{i}.",
                            "solution": f"def f{i}():\n    return {i}"},
    "alpaca_gpt4": lambda i: {"instruction": f"Add {i} and 1.", "input": "" if i % 2 else f"{i}, 1",
                              "output": str(i + 1), "text": "Below is an instruction..."},
    "commonsense170k": lambda i: {"instruction": f"Please choose the correct answer {i}.", "input": "",
                                  "output": f"the correct answer is answer{i % 2 + 1}",
                                  "answer": f"answer{i % 2 + 1}"},
    "arc_challenge": _arc_row,
    "arc_easy": _arc_row,
    "hellaswag": lambda i: {
        "ind": i, "activity_label": "Removing ice from car",
        "ctx_a": f"Then, the man writes over the snow {i} times [header] and smiles.", "ctx_b": "then",
        "ctx": "unused", "endings": [f", the man adds wax {i}.", f", a person boards a lift [title] number {i}.",
                                     f", he walks away {i}.", f" [step] he stops {i}."],
        "source_id": "x", "split": "train", "split_type": "indomain", "label": str(i % 4)},
    "winogrande": lambda i: {"sentence": f"Sarah was a better surgeon than Maria so _ got {i} hard cases.",
                             "option1": "Sarah", "option2": "Maria", "answer": str(i % 2 + 1)},
    "piqa": lambda i: {"goal": f"How do I ready cage {i}?", "sol1": f"Use paper {i}.", "sol2": f"Use pepper {i}.",
                       "label": i % 2},
    "openbookqa": lambda i: {"id": f"7-{i}", "question_stem": f"The sun is responsible for thing {i}",
                             "choices": {"text": [f"choice {i}-{k}" for k in range(4)],
                                         "label": ["A", "B", "C", "D"]}, "answerKey": "ABCD"[i % 4]},
    "social_iqa": lambda i: {"context": f"Tracy stayed out {i} nights.", "question": "What does Tracy need?",
                             "answerA": f"a plan {i}", "answerB": f"a home {i}", "answerC": f"sleep {i}",
                             "label": str(i % 3 + 1)},
    "boolq": lambda i: {"question": f"is the sky blue {i}", "passage": f"The sky looks blue ({i}).", "idx": i,
                        "label": i % 2},
}  # fmt: skip


def _write_rows(path: Path, key: str, n: int) -> Path:
    rows = [ROWS[key](i) for i in range(n)]
    if path.suffix == ".parquet":
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


DOCS = {key: make(0) for key, make in ROWS.items()}  # one row per set (test_end_to_end.py uses these two helpers)


def _local_copy(tmp_path: Path, key: str, rows: int) -> Path:
    """``<tmp_path>/<key>.jsonl``: ``rows`` rows of ``key``'s split in its real schema."""
    return _write_rows(tmp_path / f"{key}.jsonl", key, rows)


@pytest.fixture
def local(tmp_path):
    """``local(key, n)`` -> a .jsonl copy of n rows of key's split in its real schema."""
    return lambda key, n=12: _write_rows(tmp_path / f"{key}-{n}.jsonl", key, n)


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text())


# ---- converters against hand-written strings ----------------------------------------------------------------------
EXPECTED = {  # key: (row index, instruction, input, output)
    "metamathqa": (3, "What is 3+3?", "", "3+3=6. The answer is: 6"),
    "magicoder": (2, "Write f2.", "", "def f2():\n    return 2"),
    "alpaca_gpt4": (4, "Add 4 and 1.", "4, 1", "5"),
    "commonsense170k": (1, "Please choose the correct answer 1.", "", "the correct answer is answer2"),
    "arc_challenge": (1, "Question: Which planet is number 1?\nAnswer:", "", "planet 1-1"),
    "arc_easy": (3, "Question: Which planet is number 3?\nAnswer:", "", "planet 3-3"),  # labels "1".."4"
    "hellaswag": (
        1,
        "Removing ice from car: Then, the man writes over the snow 1 times and smiles. Then",
        "",
        ", a person boards a lift. number 1.",
    ),
    "winogrande": (1, "Sarah was a better surgeon than Maria so Maria", "", "got 1 hard cases."),
    "piqa": (0, "Question: How do I ready cage 0?\nAnswer:", "", "Use paper 0."),
    "openbookqa": (2, "The sun is responsible for thing 2", "", "choice 2-2"),
    "social_iqa": (2, "Q: Tracy stayed out 2 nights. What does Tracy need?\nA:", "", "sleep 2"),
    "boolq": (0, "The sky looks blue (0).\nQuestion: is the sky blue 0?\nAnswer:", "", "no"),
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_converter_gives_the_hand_written_strings(key):
    i, instruction, input_, output = EXPECTED[key]
    assert SOURCES[key].convert(ROWS[key](i)) == {"instruction": instruction, "input": input_, "output": output}


def test_more_hand_written_cases():
    assert SOURCES["boolq"].convert(ROWS["boolq"](1))["output"] == "yes"
    assert SOURCES["winogrande"].convert(ROWS["winogrande"](0)) == {
        "instruction": "Sarah was a better surgeon than Maria so Sarah", "input": "", "output": "got 0 hard cases."
    }  # fmt: skip
    assert SOURCES["social_iqa"].convert(ROWS["social_iqa"](0))["output"] == "a plan 0"  # label "1" -> answerA
    assert hellaswag_clean("  A [header] b [title] c  d [step] e. ") == "A b. c d e."
    # lm-eval strips before it drops the tags: an ending that starts with one keeps a leading space (scored as is).
    assert SOURCES["hellaswag"].convert(ROWS["hellaswag"](3))["output"] == " he stops 3."


def test_registry_matches_the_rows_and_the_contract():
    assert set(SOURCES) == set(ROWS) == set(EXPECTED)
    for key, source in SOURCES.items():
        assert source.key == key and set(source.columns) <= set(ROWS[key](0)), key
    assert (SOURCES["winogrande"].config, SOURCES["winogrande"].expected_rows) == ("winogrande_debiased", 9_248)
    assert dataset_name("metamathqa", 50_000) == "metamathqa_50k" and dataset_name("hellaswag", None) == "hellaswag"
    assert dataset_name("piqa", 1234) == "piqa_1234"


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()


def test_commonsense_sources_are_the_datasets_lm_eval_evaluates(task_manager):
    index = task_manager.task_index
    for key in COMMONSENSE:
        text = index[key].yaml_path.read_text()
        includes = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("include:")]
        for inc in includes:
            text = (index[key].yaml_path.parent / inc).read_text() + text
        if key != "winogrande":  # its training set is the paper's debiased config, the same hub dataset
            assert f"dataset_path: {SOURCES[key].hub_id}" in text, key
        else:
            assert "dataset_path: allenai/winogrande" in text


@pytest.mark.parametrize(
    ("key", "row", "error"),
    [
        ("arc_easy", dict(_arc_row(0), answerKey="E"), "answerKey 'E' is not one of the labels"),
        ("piqa", dict(ROWS["piqa"](0), label=-1), "label -1 does not index"),
        ("social_iqa", dict(ROWS["social_iqa"](0), label="0"), "label - 1 -1 does not index"),
        ("winogrande", dict(ROWS["winogrande"](0), answer=""), "neither '1' nor '2'"),
        ("winogrande", dict(ROWS["winogrande"](0), sentence="no blank"), "substring not found"),
    ],
)
def test_converters_reject_rows_without_a_valid_answer(key, row, error):
    with pytest.raises(ValueError, match=error):
        SOURCES[key].convert(row)


# ---- the same strings lm-eval scores: its own task definitions, run on the same rows ---------------------------
@pytest.fixture(scope="module")
def lm_eval_requests(task_manager):
    """``requests(key, path)`` -> [(context, gold continuation)] that lm-eval 0.4.13 builds for the rows in ``path``.

    The installed task YAML (functions, process_docs and all) is loaded as lm-eval loads it; only its dataset is
    pointed at the local file, so nothing is downloaded.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    def requests(key: str, path: Path) -> list[tuple[str, str]]:
        config = load_yaml(task_manager.task_index[key].yaml_path)
        files = {split: str(path) for split in ("train", "validation", "test")}
        config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
        (task,) = task_manager.load([config])["tasks"].values()
        assert task.config.target_delimiter == " " and task.OUTPUT_TYPE == "multiple_choice"
        pairs = []
        for i, doc in enumerate(task.training_docs()):
            context = task.fewshot_context(doc, num_fewshot=0)
            text = task.doc_to_text(doc)
            gold = text if isinstance(text, int) else task.doc_to_target(doc)  # WinoGrande: one context per option
            gold = task.doc_to_choice(doc).index(gold) if isinstance(gold, str) else gold
            request = task.construct_requests(doc, context, metadata=(key, i, 1))[gold]
            pairs.append(tuple(request.arguments))
        return pairs

    return requests


@pytest.mark.parametrize("key", COMMONSENSE)
def test_prepared_commonsense_rows_are_what_lm_eval_scores(key, local, tmp_path, lm_eval_requests):
    path = local(key, 8)
    expected = lm_eval_requests(key, path)
    assert len(expected) == 8
    for (context, continuation), i in zip(expected, range(8)):
        record = SOURCES[key].convert(ROWS[key](i))
        assert (record["instruction"], " " + record["output"], record["input"]) == (context, continuation, "")
    prepare_dataset(key, tmp_path / "out", source=path)
    prepared = {(r["instruction"], " " + r["output"]) for r in _records(tmp_path / "out" / f"{key}.json")}
    assert prepared == set(expected)


# ---- sampling -----------------------------------------------------------------------------------------------------
def test_sample_indices_are_seeded_nested_and_distinct():
    assert sample_indices(100, 30, 42) == sample_indices(100, 30, 42)
    assert sample_indices(100, 50, 42)[:30] == sample_indices(100, 30, 42)
    assert sample_indices(100, 30, 42) != sample_indices(100, 30, 7)
    assert sorted(sample_indices(100, None, 42)) == list(range(100))
    assert len(set(sample_indices(100, 70, 42))) == 70


def test_prepared_samples_are_seeded_and_nested(tmp_path, local):
    source = local("metamathqa", 40)

    def take(n: int | None, seed: int, folder: str) -> list[str]:
        prepare_dataset("metamathqa", tmp_path / folder, samples=n, seed=seed, source=source)
        return [r["instruction"] for r in _records(tmp_path / folder / f"{dataset_name('metamathqa', n)}.json")]

    assert take(10, 3, "a") == take(10, 3, "b")  # same seed, same rows in the same order
    assert take(20, 3, "a")[:10] == take(10, 3, "a")  # the smaller sample is a prefix of the larger
    assert take(10, 4, "c") != take(10, 3, "a")
    whole = take(None, 3, "a")
    assert sorted(whole) == sorted(f"What is {i}+{i}?" for i in range(40)) and whole[:20] == take(20, 3, "a")


# ---- files: dataset_info, manifest, idempotence --------------------------------------------------------------------
def test_manifest_and_dataset_info(tmp_path, local):
    source = local("alpaca_gpt4", 20)
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "other.json"}}))
    (out / "manifest.json").write_text(json.dumps({"other": {"rows": 1}}))
    entry = prepare_dataset("alpaca_gpt4", out, samples=8, seed=1, source=source)
    records = _records(out / "alpaca_gpt4_8.json")
    assert len(records) == 8 and all(set(r) == {"instruction", "input", "output"} for r in records)
    assert {r["input"] for r in records} <= {"", *(f"{i}, 1" for i in range(0, 20, 2))}

    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {
        "other": {"file_name": "other.json"},  # other entries kept
        "alpaca_gpt4_8": {
            "file_name": "alpaca_gpt4_8.json",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        },
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["other"] == {"rows": 1} and manifest["alpaca_gpt4_8"] == entry
    local_id = f"local:{source.resolve()}"
    assert {k: entry[k] for k in ("key", "hub_id", "config", "split", "source", "revision", "samples", "seed")} == {
        "key": "alpaca_gpt4", "hub_id": "vicgalle/alpaca-gpt4", "config": None, "split": "train",
        "source": local_id, "revision": local_id, "samples": 8, "seed": 1,
    }  # fmt: skip
    assert (entry["rows"], entry["source_rows"], entry["file"]) == (8, 20, "alpaca_gpt4_8.json")
    assert entry["sha256"] == hashlib.sha256((out / "alpaca_gpt4_8.json").read_bytes()).hexdigest()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "plain").write_text("")
    assert {p.stat().st_mode for p in out.iterdir()} == {(tmp_path / "plain").stat().st_mode}  # the usual permissions


def test_second_call_is_skipped_and_changes_rebuild(tmp_path, local, capsys):
    source = local("boolq", 10)
    out = tmp_path / "d"
    first = prepare_dataset("boolq", out, source=source)
    target = out / "boolq.json"
    stamp = target.stat().st_mtime_ns
    assert prepare_dataset("boolq", out, source=source) == first
    assert "up to date" in capsys.readouterr().out and target.stat().st_mtime_ns == stamp

    target.write_text("[]")  # a damaged file is rebuilt
    assert prepare_dataset("boolq", out, source=source)["sha256"] == first["sha256"]
    assert "up to date" not in capsys.readouterr().out
    (out / "dataset_info.json").unlink()  # a lost dataset_info entry is restored on a skip
    prepare_dataset("boolq", out, source=source)
    assert "boolq" in json.loads((out / "dataset_info.json").read_text())
    capsys.readouterr()
    assert prepare_dataset("boolq", out, seed=7, source=source)["seed"] == 7  # other settings: rebuilt
    assert prepare_dataset("boolq", out, seed=7, source=source, force=True)["seed"] == 7
    assert "up to date" not in capsys.readouterr().out


def test_an_interrupted_write_keeps_the_previous_files(tmp_path, local, monkeypatch):
    source = local("piqa", 6)
    out = tmp_path / "i"
    prepare_dataset("piqa", out, source=source)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rename = Path.replace

    def interrupted(self, target):
        if Path(target).name == "piqa.json":
            raise KeyboardInterrupt  # the new rows are in the temporary file, which never takes the real name
        return rename(self, target)

    monkeypatch.setattr(Path, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("piqa", out, seed=1, source=source)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no partial file, no temporary left
    assert prepare_dataset("piqa", out, source=source)["seed"] == 42  # and still up to date


def test_register_dataset_merges(tmp_path):
    register_dataset(tmp_path, "a")
    register_dataset(tmp_path, "b", {"rows": 2})
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"a", "b"} and info["a"]["file_name"] == "a.json"
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"b": {"rows": 2}}
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DataPreparationError, match=r"manifest.json is not valid JSON.*delete it"):
        register_dataset(tmp_path, "c", {"rows": 3})


# ---- local copies: parquet, hub snapshots, save_to_disk ----------------------------------------------------------
def test_local_parquet_snapshot_folder_and_saved_dataset(tmp_path):
    import datasets

    single = _write_rows(tmp_path / "piqa.parquet", "piqa", 9)
    assert prepare_dataset("piqa", tmp_path / "p", source=single)["rows"] == 9

    snapshot = tmp_path / "ai2_arc"  # a hub snapshot: every config and split side by side
    for config, n in (("ARC-Challenge", 6), ("ARC-Easy", 9)):
        for split in ("train", "test", "validation"):
            (snapshot / config).mkdir(parents=True, exist_ok=True)
            _write_rows(snapshot / config / f"{split}-00000-of-00001.parquet", "arc_easy", n + len(split))
    entry = prepare_dataset("arc_challenge", tmp_path / "p", source=snapshot)
    assert (entry["rows"], entry["source_rows"]) == (11, 11)  # ARC-Challenge/train only: 6 + len("train")

    saved = tmp_path / "saved"
    rows = [ROWS["boolq"](i) for i in range(5)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(saved))
    assert prepare_dataset("boolq", tmp_path / "p", source=saved)["rows"] == 5


# ---- errors -------------------------------------------------------------------------------------------------------
def test_errors_for_counts_keys_and_schemas(tmp_path, local):
    source = local("metamathqa", 4)
    with pytest.raises(DataPreparationError, match=r"5 samples asked but .* has only 4 rows; ask for at most 4"):
        prepare_dataset("metamathqa", tmp_path / "e", samples=5, source=source)
    with pytest.raises(DataPreparationError, match=r"Unknown training set 'gsm8k'; known keys: metamathqa, magicoder"):
        prepare_dataset("gsm8k", tmp_path / "e")
    with pytest.raises(DataPreparationError, match="Unknown training set"):
        dataset_name("gsm8k", 10)
    with pytest.raises(DataPreparationError, match="samples must be a positive integer"):
        prepare_dataset("metamathqa", tmp_path / "e", samples=0, source=source)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "no query column", "answer": "1"}) + "\n")
    with pytest.raises(DataPreparationError, match=r"lack the columns \['query', 'response'\].*meta-math/MetaMathQA"):
        prepare_dataset("metamathqa", tmp_path / "e", source=bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(dict(ROWS["boolq"](0), label=5)) + "\n")
    with pytest.raises(DataPreparationError, match=r"boolq: row 0 cannot be converted .*label 5"):
        prepare_dataset("boolq", tmp_path / "e", source=broken)
    with pytest.raises(DataPreparationError, match="no such file or folder"):
        prepare_dataset("boolq", tmp_path / "e", source=tmp_path / "missing.json")
    assert not (tmp_path / "e").exists()  # nothing written by a failed preparation


def _fail_with(monkeypatch, error: Exception) -> None:
    import datasets

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", fail)


def _gated() -> Exception:
    import httpx
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError

    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/api/datasets/x"))
    try:  # as datasets raises it: its own error, from the hub's
        raise DatasetNotFoundError("Dataset 'x' is a gated dataset on the Hub.") from GatedRepoError(
            "401 Client Error", response=response
        )
    except DatasetNotFoundError as err:
        return err


def _unreachable() -> Exception:
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        raise FileNotFoundError("Couldn't find 'meta-math/MetaMathQA' on the Hugging Face Hub either") from (
            LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.")
        )
    except FileNotFoundError as err:
        return err


@pytest.mark.parametrize(
    ("error", "offline", "expected"),
    [
        (ConnectionError("Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"), True,
         r"meta-math/MetaMathQA cannot be downloaded: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set and "
         r"meta-math/MetaMathQA \(train\) is not in the local cache.*"
         r"--source metamathqa=PATH"),
        (_unreachable(), False, r"MetaMathQA cannot be downloaded: the Hugging Face Hub cannot be reached for "
                                r"meta-math/MetaMathQA \(train\)\. Go online.*--source metamathqa=PATH"),
        (_gated(), False, r"gated or needs authentication: accept its terms on "
                          r"https://huggingface.co/datasets/meta-math/MetaMathQA, then log in with `huggingface-cli "
                          r"login`"),
        (RuntimeError("disk full"), False, r"Loading meta-math/MetaMathQA \(train\) failed: RuntimeError: disk full"),
    ],
)  # fmt: skip
def test_hub_errors_are_explained(tmp_path, monkeypatch, error, offline, expected):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if offline:
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _fail_with(monkeypatch, error)
    with pytest.raises(DataPreparationError, match=expected) as caught:
        prepare_dataset("metamathqa", tmp_path / "f", samples=4)
    assert caught.value.__cause__ is error
    assert not (tmp_path / "f").exists()


def test_offline_hub_load_is_explained_without_mocks(tmp_path, monkeypatch):
    """A real ``datasets.load_dataset`` call in offline mode for a dataset that no cache holds."""
    monkeypatch.setitem(SOURCES, "boolq", replace(SOURCES["boolq"], hub_id="losia-factory-tests/not-cached"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataPreparationError, match=r"not-cached \(boolq, train\) is not in the local cache"):
        prepare_dataset("boolq", tmp_path / "g")


def test_hub_load_records_the_commit_and_warns_on_a_changed_size(tmp_path, monkeypatch, capsys):
    import datasets

    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = tmp_path / "cache" / "allenai___ai2_arc" / "ARC-Easy" / "0.0.0" / commit
    datasets.Dataset.from_list([_arc_row(i) for i in range(12)]).save_to_disk(str(cached))
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.load_from_disk(str(cached))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    entry = prepare_dataset("arc_easy", tmp_path / "h", samples=5, revision="v1")
    assert calls == [(("allenai/ai2_arc", "ARC-Easy"), {"split": "train", "revision": "v1"})]
    assert (entry["source"], entry["revision"], entry["requested_revision"]) == ("hub", commit, "v1")
    assert (entry["rows"], entry["source_rows"], entry["expected_rows"]) == (5, 12, 2_251)
    assert "has 12 rows, 2251 expected" in capsys.readouterr().out
    prepare_dataset("arc_easy", tmp_path / "h", samples=5, revision="v1")
    assert len(calls) == 1  # up to date: the hub is not asked again


# ---- LLaMA-Factory reads the prepared set -------------------------------------------------------------------------
def test_llamafactory_loads_a_prepared_set(tmp_path, local):
    from types import SimpleNamespace

    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    out = tmp_path / "lf"
    prepare_dataset("alpaca_gpt4", out, samples=6, source=local("alpaca_gpt4", 10))
    prepare_dataset("winogrande", out, source=local("winogrande", 4))
    for name in ("alpaca_gpt4_6", "winogrande"):
        (attr,) = get_dataset_list([name], str(out))
        assert (attr.load_from, attr.formatting) == ("file", "alpaca")
        assert (attr.prompt, attr.query, attr.response) == ("instruction", "input", "output")
        data_args = DataArguments(dataset_dir=str(out), dataset=name)
        model_args = SimpleNamespace(cache_dir=None, hf_hub_token=None)
        training_args = SimpleNamespace(local_process_index=0, dataloader_num_workers=0)
        aligned = _load_single_dataset(attr, model_args, data_args, training_args)
        records = _records(out / f"{name}.json")
        assert len(aligned) == len(records)
        for row, record in zip(aligned, records):
            prompt = "\n".join(t for t in (record["instruction"], record["input"]) if t)
            assert row["_prompt"] == [{"role": "user", "content": prompt}]
            assert row["_response"] == [{"role": "assistant", "content": record["output"]}]


# ---- the command line -------------------------------------------------------------------------------------------
def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **env)
    cmd = [sys.executable, "scripts/prepare_data.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_cli(tmp_path, local):
    wino, math = local("winogrande", 12), local("metamathqa", 30)
    out = str(tmp_path / "cli")
    result = _cli("--dataset", "winogrande", "--dataset", "metamathqa:2_0", "--data-dir", out, "--seed", "5",
                  "--source", f"winogrande={wino}", "--source", f"metamathqa={math}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("[prepare]")]
    assert lines[0].startswith("winogrande: 12 rows of 12 (winogrande, seed 5), revision local:")
    assert lines[1].startswith("metamathqa_20: 20 rows of 30 (metamathqa, seed 5)")
    assert {r["output"] for r in _records(tmp_path / "cli" / "winogrande.json")} == {
        f"got {i} hard cases." for i in range(12)
    }
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert set(manifest) == {"winogrande", "metamathqa_20"} and manifest["metamathqa_20"]["seed"] == 5

    again = _cli("--dataset", "metamathqa:20", "--data-dir", out, "--seed", "5", "--source", f"metamathqa={math}")
    assert again.returncode == 0 and "up to date" in again.stdout

    too_many = _cli("--dataset", "winogrande:1k", "--data-dir", out, "--source", f"winogrande={wino}")
    assert too_many.returncode == 2 and "error: winogrande: 1000 samples asked" in too_many.stderr
    offline = _cli("--dataset", "boolq", "--data-dir", out, HF_HOME=str(tmp_path / "empty-hf-home"))
    assert offline.returncode == 2 and "aps/super_glue (boolq, train) is not in the local cache" in offline.stderr
    assert "--source boolq=PATH" in offline.stderr
    for bad, message in (
        (["--dataset", "nope:5"], "unknown key 'nope'"),
        (["--dataset", "piqa:-3"], "positive integer such as 50000 or 50k"),
        (["--dataset", "piqa", "--source", "piqa"], "--source piqa: expected KEY=VALUE"),
        (["--dataset", "piqa", "--revision", "nope=main"], "--revision nope=main: unknown key 'nope'"),
        (["--dataset", "piqa", "--dataset", "boolq", "--name", "x"], "--name needs exactly one --dataset"),
    ):
        result = _cli(*bad, "--data-dir", out)
        assert result.returncode == 2 and message in result.stderr, (bad, result.stderr)
