"""Training sets of the papers: download, sample with a fixed seed, convert to LLaMA-Factory's alpaca format.

``prepare_dataset`` writes ``<data_dir>/<name>.json`` (a list of ``{"instruction", "input", "output"}``), merges its
entry into ``<data_dir>/dataset_info.json`` and records the source, its revision, the sample count and the file's
sha256 in ``<data_dir>/manifest.json``.

The common-sense sets are converted to the very strings lm-evaluation-harness scores for that task: ``instruction``
is lm-eval's prompt (its ``doc_to_text``) and ``output`` the correct choice, and the recipes train them with the
``empty`` template, so a model learns the continuation that evaluation later compares by log-likelihood.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Record = dict[str, str]
FORMAT_VERSION = 1  # bump when a converter changes: prepared files are then rebuilt


class DataPreparationError(RuntimeError):
    """A training set cannot be prepared; the message says why and what to do."""


def _record(instruction: str, output: str, input_: str = "") -> Record:
    return {"instruction": instruction, "input": input_, "output": output}


def _choice_by_key(doc: dict[str, Any]) -> str:
    """ARC / OpenBookQA: the text of the choice whose label is ``answerKey``."""
    labels = list(doc["choices"]["label"])
    return doc["choices"]["text"][labels.index(doc["answerKey"].strip())]


def hellaswag_clean(text: str) -> str:
    """HellaSwag's text clean-up as lm-eval applies it (WikiHow bracket artefacts removed)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def convert_hellaswag(doc: dict[str, Any]) -> Record:
    """HellaSwag: lm-eval's query (activity label, both contexts, cleaned) -> the correct ending."""
    context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    prompt = hellaswag_clean(doc["activity_label"] + ": " + context)
    return _record(prompt, hellaswag_clean(doc["endings"][int(doc["label"])]))


def convert_winogrande(doc: dict[str, Any]) -> Record:
    """WinoGrande: the sentence up to the blank with the correct option -> the rest of the sentence."""
    # lm-eval scores WinoGrande by "partial evaluation": the sentence up to the blank with an option filled in is the
    # context, the rest of the sentence the continuation. Training uses the correct option's context.
    blank = doc["sentence"].index("_")
    option = doc["option1"] if str(doc["answer"]) == "1" else doc["option2"]
    return _record(doc["sentence"][:blank] + option, doc["sentence"][blank + 1 :].strip())


def convert_social_iqa(doc: dict[str, Any]) -> Record:
    r"""Social IQa: ``Q: <context> <question>\nA:`` -> the correct answer (labels are 1-based)."""
    answers = [doc["answerA"], doc["answerB"], doc["answerC"]]
    return _record(f"Q: {doc['context']} {doc['question']}\nA:", answers[int(doc["label"]) - 1])


CONVERTERS: dict[str, Callable[[dict[str, Any]], Record]] = {
    "metamathqa": lambda d: _record(d["query"], d["response"]),
    "magicoder": lambda d: _record(d["problem"], d["solution"]),
    "alpaca_gpt4": lambda d: _record(d["instruction"], d["output"], d.get("input") or ""),
    "commonsense170k": lambda d: _record(d["instruction"], d["output"], d.get("input") or ""),
    "arc_challenge": lambda d: _record(f"Question: {d['question']}\nAnswer:", _choice_by_key(d)),
    "arc_easy": lambda d: _record(f"Question: {d['question']}\nAnswer:", _choice_by_key(d)),
    "hellaswag": convert_hellaswag,
    "winogrande": convert_winogrande,
    "piqa": lambda d: _record(f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]][int(d["label"])]),
    "openbookqa": lambda d: _record(d["question_stem"], _choice_by_key(d)),
    "social_iqa": convert_social_iqa,
    "boolq": lambda d: _record(f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:", ["no", "yes"][int(d["label"])]),
}


@dataclass(frozen=True)
class Source:
    """Where a training set comes from: a Hugging Face dataset, its config and split."""

    key: str
    hub_id: str
    config: str | None
    split: str
    rows: int | None  # rows of the split, when known (LoSiA paper Table 9 for the common-sense sets)
    gated: bool = False


SOURCES = {
    s.key: s
    for s in (
        Source("metamathqa", "meta-math/MetaMathQA", None, "train", 395_000),
        Source("magicoder", "ise-uiuc/Magicoder-OSS-Instruct-75K", None, "train", None),
        Source("alpaca_gpt4", "vicgalle/alpaca-gpt4", None, "train", 52_002),
        Source("commonsense170k", "zwhe99/commonsense_170k", None, "train", None),
        # The common-sense train splits, from the datasets lm-eval evaluates (Table 9's sizes in the comments).
        Source("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "train", 1_119),  # Table 9: 1,120
        Source("arc_easy", "allenai/ai2_arc", "ARC-Easy", "train", 2_251),  # Table 9: 2,250
        Source("hellaswag", "Rowan/hellaswag", None, "train", 39_905),
        Source("winogrande", "allenai/winogrande", "winogrande_debiased", "train", 9_248),
        Source("piqa", "baber/piqa", None, "train", 16_113),  # Table 9: 16,100
        Source("openbookqa", "allenai/openbookqa", "main", "train", 4_957),
        Source("social_iqa", "lighteval/siqa", None, "train", 33_410),
        Source("boolq", "aps/super_glue", "boolq", "train", 9_427),
    )
}


def dataset_name(key: str, samples: int | None) -> str:
    """LLaMA-Factory dataset name: ``metamathqa_50k`` for 50,000 samples, the key itself for a whole split."""
    _source(key)
    if samples is None:
        return key
    return f"{key}_{samples // 1000}k" if samples % 1000 == 0 else f"{key}_{samples}"


def _source(key: str) -> Source:
    if key not in SOURCES:
        raise DataPreparationError(f"Unknown training set {key!r}; known: {', '.join(SOURCES)}.")
    return SOURCES[key]


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _load_local(path: Path, split: str):
    import datasets

    if not path.exists():
        raise DataPreparationError(f"The local copy {path} does not exist.")
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl", ".parquet"))
    )
    if not files:
        raise DataPreparationError(f"{path} holds no .json, .jsonl or .parquet file.")
    builder = "parquet" if files[0].suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")


def _load_hub(source: Source, revision: str | None):
    import datasets

    where = source.hub_id + (f" ({source.config})" if source.config else "")
    if _offline():
        raise DataPreparationError(
            f"{where} cannot be downloaded: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set. Unset it, or pass a local "
            f"copy in the dataset's own schema: --source {source.key}=PATH."
        )
    try:
        return datasets.load_dataset(source.hub_id, source.config, split=source.split, revision=revision)
    except Exception as err:  # rephrased with the dataset and the fix; the original is chained
        text = f"{type(err).__name__}: {err}"
        if "gated" in text.lower() or "401" in text or "403" in text:
            raise DataPreparationError(
                f"{where} is gated: accept its terms on huggingface.co/datasets/{source.hub_id} and log in "
                f"(huggingface-cli login). {text}"
            ) from err
        if any(s in text for s in ("ConnectionError", "Couldn't reach", "Max retries", "offline", "NameResolution")):
            raise DataPreparationError(
                f"{where} cannot be reached ({text}). Check the network, or pass a local copy: "
                f"--source {source.key}=PATH."
            ) from err
        raise DataPreparationError(f"Loading {where} failed: {text}") from err


def _resolve_revision(source: Source, revision: str | None) -> str:
    if _offline():
        return revision or "unresolved (offline)"
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source.hub_id, revision=revision).sha or (revision or "main")
    except Exception:  # the revision is informative; the data itself was loaded
        return revision or "unresolved"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, payload: Any) -> None:
    """Write atomically: a run interrupted here leaves the previous file intact."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def sample_indices(total: int, samples: int | None, seed: int) -> list[int]:
    """The rows kept: the first ``samples`` of a seeded permutation (so a smaller sample is a prefix of a larger)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(total)
    return [int(i) for i in (order if samples is None else order[:samples])]


def prepare_dataset(
    key: str,
    data_dir: str | Path,
    samples: int | None = None,
    seed: int = 42,
    source: str | Path | None = None,
    revision: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Prepare one training set; skipped when the manifest already records the same settings and file.

    Args:
        key: A key of :data:`SOURCES`.
        data_dir: Output folder (``data/paper``).
        samples: Rows drawn at random (seeded); None keeps the whole split in a seeded order.
        seed: Sampling seed.
        source: A local copy of the split in the dataset's own schema (.json/.jsonl/.parquet file or folder)
            instead of the Hugging Face Hub.
        revision: Hub revision (branch, tag or commit) to load.
        name: Dataset name to write (default :func:`dataset_name`); a capped smoke run keeps the recipe's name,
            and its manifest entry records the real sample count, so a full run later rebuilds the file.

    Returns:
        The manifest entry of the prepared set.
    """
    spec = _source(key)
    if samples is not None and samples < 1:
        raise DataPreparationError(f"samples must be >= 1, got {samples}.")
    data_dir = Path(data_dir)
    name = name or dataset_name(key, samples)
    settings = {
        "key": key,
        "source": f"local:{Path(source).resolve()}" if source else spec.hub_id,
        "config": spec.config,
        "split": spec.split,
        "requested_revision": revision,
        "samples": samples,
        "seed": seed,
        "format_version": FORMAT_VERSION,
    }
    manifest_path = data_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    previous = manifest.get(name)
    target = data_dir / f"{name}.json"
    same = previous and {k: previous.get(k) for k in settings} == settings and target.is_file()
    if same and _sha256(target) == previous.get("sha256"):
        print(f"[prepare] {name}: up to date ({previous['rows']} rows), skipped", flush=True)
        return previous

    print(f"[prepare] {name}: loading {settings['source']}", flush=True)
    dataset = _load_local(Path(source), spec.split) if source else _load_hub(spec, revision)
    total = len(dataset)
    if samples is not None and samples > total:
        raise DataPreparationError(
            f"{key}: {samples} samples asked but the source has only {total} rows; lower the count."
        )
    convert = CONVERTERS[key]
    records = []
    for i in sample_indices(total, samples, seed):
        try:
            records.append(convert(dataset[i]))
        except (KeyError, ValueError, IndexError) as err:
            raise DataPreparationError(
                f"{key}: row {i} does not have the expected schema ({type(err).__name__}: {err}); columns are "
                f"{dataset.column_names}."
            ) from err
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_json(target, records)

    info_path = data_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[name] = {
        "file_name": target.name,
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
    _write_json(info_path, info)

    entry = {
        **settings,
        "revision": _resolve_revision(spec, revision) if not source else "local",
        "source_rows": total,
        "rows": len(records),
        "sha256": _sha256(target),
        "file": target.name,
        "prepared": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    manifest[name] = entry
    _write_json(manifest_path, manifest)
    print(f"[prepare] {name}: {len(records)} of {total} rows -> {target}", flush=True)
    return entry
