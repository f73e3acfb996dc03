r"""Training sets of the papers: load, sample with a fixed seed, convert to LLaMA-Factory's alpaca format.

``prepare_dataset`` writes ``<data_dir>/<name>.json`` (a list of ``{"instruction", "input", "output"}`` records),
merges its entry into ``<data_dir>/dataset_info.json`` and records where the rows came from (hub id, config, split,
resolved commit), the sample count, the seed and the file's sha256 in ``<data_dir>/manifest.json``. A second call with
the same settings finds the manifest entry and an intact file and does nothing. Every file is written to a temporary
name and renamed, so an interrupted run never leaves a half-written file under a real name.

Sampling draws a permutation of the whole split from ``numpy.random.default_rng(seed)`` and keeps its first ``N``
rows, so a 30K sample is a prefix of the 50K sample, itself a prefix of the 70K sample (Table 4's data scaling).

The instruction sets keep their own texts: MetaMathQA ``query -> response``, Magicoder OSS-Instruct
``problem -> solution``, Alpaca-GPT4 and Commonsense170K ``instruction (+ input) -> output``.

The common-sense sets are converted to the very strings lm-evaluation-harness (0.4.13) scores for the task of the
same name. lm-eval evaluates these tasks by log-likelihood: for each choice it scores the continuation
``target_delimiter + choice`` (the delimiter is a single space for all eight tasks) after the context ``doc_to_text``.
So ``instruction`` is that context and ``output`` the correct choice's text without the leading space, and the
recipes train them with LLaMA-Factory's ``empty`` template: training and evaluation see the same prompt and answer.
Per task:

- ARC-Easy / ARC-Challenge: ``Question: <question>\nAnswer:`` -> the choice whose label is ``answerKey``.
- HellaSwag: ``<activity_label>: <ctx_a> <Ctx_b>`` -> the correct ending, both cleaned the way lm-eval's
  ``process_docs`` cleans them (WikiHow ``[title]`` markers become ``. ``, other ``[...]`` tags are dropped, double
  spaces collapsed); :func:`hellaswag_clean` is our own implementation of that rule.
- WinoGrande: lm-eval uses "partial evaluation": the contexts are the sentence up to the blank with each option filled
  in, and the continuation is the rest of the sentence after the blank (the same for both options). We train on the
  correct option's context -> the rest of the sentence.
- PIQA: ``Question: <goal>\nAnswer:`` -> the correct solution.
- OpenBookQA: ``<question_stem>`` -> the choice whose label is ``answerKey``.
- Social IQa: ``Q: <context> <question>\nA:`` -> the correct answer (labels are 1-based).
- BoolQ: ``<passage>\nQuestion: <question>?\nAnswer:`` -> ``yes`` or ``no``.

The tests check every conversion against lm-eval's own task definitions (the requests it builds for the same rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Record = dict[str, str]
Doc = Mapping[str, Any]

FORMAT_VERSION = 1  # bump when a converter's output changes: prepared files are then rebuilt
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
DATASET_INFO = "dataset_info.json"
MANIFEST = "manifest.json"
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


class DataPreparationError(RuntimeError):
    """A training set cannot be prepared; the message says why and what to do."""


# ---- converters: one row of the dataset, in its own schema -> one alpaca record ------------------------------------
def _record(instruction: str, output: str, input_: str = "") -> Record:
    return {"instruction": instruction, "input": input_, "output": output}


def _pick(options: list[str], index: int, what: str) -> str:
    if not 0 <= index < len(options):
        raise ValueError(f"{what} {index} does not index one of the {len(options)} options")
    return options[index]


def _labelled_choice(doc: Doc) -> str:
    """ARC / OpenBookQA: the text of the choice whose label is ``answerKey``."""
    labels = [str(label) for label in doc["choices"]["label"]]
    key = str(doc["answerKey"]).strip()
    if key not in labels:
        raise ValueError(f"answerKey {key!r} is not one of the labels {labels}")
    return doc["choices"]["text"][labels.index(key)]


def convert_metamathqa(doc: Doc) -> Record:
    """MetaMathQA: query -> response."""
    return _record(doc["query"], doc["response"])


def convert_magicoder(doc: Doc) -> Record:
    """Magicoder OSS-Instruct: problem -> solution."""
    return _record(doc["problem"], doc["solution"])


def convert_alpaca(doc: Doc) -> Record:
    """Alpaca-style rows (Alpaca-GPT4, Commonsense170K): instruction, input and output as they are."""
    return _record(doc["instruction"], doc["output"], doc.get("input") or "")


def convert_arc(doc: Doc) -> Record:
    r"""ARC: ``Question: <question>\nAnswer:`` -> the correct choice."""
    return _record(f"Question: {doc['question']}\nAnswer:", _labelled_choice(doc))


def hellaswag_clean(text: str) -> str:
    """HellaSwag's clean-up as lm-eval applies it: WikiHow ``[title]`` -> ``. ``, other ``[...]`` tags dropped."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def convert_hellaswag(doc: Doc) -> Record:
    """HellaSwag: activity label and both contexts (cleaned) -> the correct ending (cleaned)."""
    prompt = hellaswag_clean(f"{doc['activity_label']}: {doc['ctx_a']} {doc['ctx_b'].capitalize()}")
    return _record(prompt, hellaswag_clean(_pick(list(doc["endings"]), int(doc["label"]), "label")))


def convert_winogrande(doc: Doc) -> Record:
    """WinoGrande: the sentence up to the blank with the correct option -> the rest of the sentence."""
    sentence = doc["sentence"]
    blank = sentence.index("_")
    answer = str(doc["answer"]).strip()
    if answer not in ("1", "2"):
        raise ValueError(f"answer {answer!r} is neither '1' nor '2'")
    option = doc["option1"] if answer == "1" else doc["option2"]
    return _record(sentence[:blank] + option, sentence[blank + 1 :].strip())


def convert_piqa(doc: Doc) -> Record:
    r"""PIQA: ``Question: <goal>\nAnswer:`` -> the correct solution."""
    return _record(f"Question: {doc['goal']}\nAnswer:", _pick([doc["sol1"], doc["sol2"]], int(doc["label"]), "label"))


def convert_openbookqa(doc: Doc) -> Record:
    """OpenBookQA: the question stem -> the correct choice."""
    return _record(doc["question_stem"], _labelled_choice(doc))


def convert_social_iqa(doc: Doc) -> Record:
    r"""Social IQa: ``Q: <context> <question>\nA:`` -> the correct answer (labels are 1-based)."""
    answers = [doc["answerA"], doc["answerB"], doc["answerC"]]
    return _record(f"Q: {doc['context']} {doc['question']}\nA:", _pick(answers, int(doc["label"]) - 1, "label - 1"))


def convert_boolq(doc: Doc) -> Record:
    r"""BoolQ: ``<passage>\nQuestion: <question>?\nAnswer:`` -> ``yes`` / ``no``."""
    answer = _pick(["no", "yes"], int(doc["label"]), "label")
    return _record(f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", answer)


# ---- the registry --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where a training set comes from and how one of its rows becomes an alpaca record.

    Attributes:
        key: Our name for the set (``--dataset KEY``); for the common-sense sets also lm-eval's task name.
        hub_id: Hugging Face dataset id.
        config: Dataset config (subset) name, or None for the default one.
        split: The split used.
        expected_rows: Rows of that split when known (a different count is reported as a warning).
        convert: Row -> ``{"instruction", "input", "output"}``.
        columns: The columns ``convert`` reads (checked before converting).
    """

    key: str
    hub_id: str
    config: str | None
    split: str
    expected_rows: int | None
    convert: Callable[[Doc], Record]
    columns: tuple[str, ...]

    @property
    def where(self) -> str:
        """``hub_id (config, split)`` for messages."""
        return f"{self.hub_id} ({self.config + ', ' if self.config else ''}{self.split})"


_ARC_COLUMNS = ("question", "choices", "answerKey")
# The common-sense sets come from the hub datasets lm-eval 0.4.13's tasks read (its task YAMLs' dataset_path),
# except WinoGrande, whose debiased config is the LoSiA paper's training set (lm-eval evaluates winogrande_xl's
# validation split, the same rows in every config). Row counts: the splits as served; the LoSiA paper's Table 9
# rounds ARC-C to 1,120, ARC-E to 2,250 and PIQA to 16,100.
SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            "metamathqa", "meta-math/MetaMathQA", None, "train", 395_000, convert_metamathqa, ("query", "response")
        ),
        Source(
            "magicoder",
            "ise-uiuc/Magicoder-OSS-Instruct-75K",
            None,
            "train",
            75_197,
            convert_magicoder,
            ("problem", "solution"),
        ),
        Source(
            "alpaca_gpt4", "vicgalle/alpaca-gpt4", None, "train", 52_002, convert_alpaca, ("instruction", "output")
        ),
        # LLM-Adapters' commonsense_170k.json (instruction, input, output, answer) as parquet on the hub.
        Source(
            "commonsense170k",
            "zwhe99/commonsense_170k",
            None,
            "train",
            None,
            convert_alpaca,
            ("instruction", "output"),
        ),
        Source("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "train", 1_119, convert_arc, _ARC_COLUMNS),
        Source("arc_easy", "allenai/ai2_arc", "ARC-Easy", "train", 2_251, convert_arc, _ARC_COLUMNS),
        Source(
            "hellaswag",
            "Rowan/hellaswag",
            None,
            "train",
            39_905,
            convert_hellaswag,
            ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
        ),
        Source(
            "winogrande",
            "allenai/winogrande",
            "winogrande_debiased",
            "train",
            9_248,
            convert_winogrande,
            ("sentence", "option1", "option2", "answer"),
        ),
        Source("piqa", "baber/piqa", None, "train", 16_113, convert_piqa, ("goal", "sol1", "sol2", "label")),
        Source(
            "openbookqa",
            "allenai/openbookqa",
            "main",
            "train",
            4_957,
            convert_openbookqa,
            ("question_stem", "choices", "answerKey"),
        ),
        Source(
            "social_iqa",
            "lighteval/siqa",
            None,
            "train",
            33_410,
            convert_social_iqa,
            ("context", "question", "answerA", "answerB", "answerC", "label"),
        ),
        Source("boolq", "aps/super_glue", "boolq", "train", 9_427, convert_boolq, ("question", "passage", "label")),
    )
}


def get_source(key: str) -> Source:
    """The registry entry of ``key``; an unknown key raises :class:`DataPreparationError` listing the known ones."""
    if key not in SOURCES:
        raise DataPreparationError(f"Unknown training set {key!r}; known keys: {', '.join(SOURCES)}.")
    return SOURCES[key]


def dataset_name(key: str, samples: int | None) -> str:
    """LLaMA-Factory dataset name: ``metamathqa_50k`` for 50,000 samples, the key itself for a whole split."""
    get_source(key)
    if samples is None:
        return key
    return f"{key}_{samples // 1000}k" if samples % 1000 == 0 else f"{key}_{samples}"


def sample_indices(total: int, samples: int | None, seed: int) -> list[int]:
    """Rows kept: the first ``samples`` of a seeded permutation of ``range(total)`` (all of it when None)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(total)
    return order[:samples].tolist() if samples is not None else order.tolist()


# ---- loading -------------------------------------------------------------------------------------------------------
def _offline() -> bool:
    flags = (os.environ.get(v, "").strip().lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The error and every error it was raised from or during (``datasets`` re-raises hub errors)."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _is_gated(err: BaseException) -> bool:
    # huggingface_hub.errors.GatedRepoError, or datasets' DatasetNotFoundError("... is a gated dataset ...").
    return (
        any(cls.__name__ == "GatedRepoError" for cls in type(err).__mro__)
        or re.search(r"\bgated\b", str(err).lower()) is not None
    )


_CONNECTION_ERRORS = {"ConnectError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException"}
_CONNECTION_ERRORS |= {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "NameResolutionError", "MaxRetryError"}
_CONNECTION_TEXT = ("couldn't reach", "name or service not known", "temporary failure in name resolution",
                    "max retries exceeded", "check your connection", "offline mode")  # fmt: skip


def _is_connection(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, TimeoutError)) or type(err).__name__ in _CONNECTION_ERRORS:
        return True
    return any(text in str(err).lower() for text in _CONNECTION_TEXT)


def _explain(err: Exception, spec: Source, revision: str | None) -> DataPreparationError:
    """A loading error rephrased: which dataset, what went wrong, what to do."""
    chain = list(_chain(err))
    detail = f"{type(err).__name__}: {err}"
    local = f"--source {spec.key}=PATH (a copy of the split in the dataset's own schema: {'/'.join(LOCAL_FORMATS)})"
    if any(_is_gated(e) for e in chain):
        return DataPreparationError(
            f"{spec.where} is gated or needs authentication: accept its terms on "
            f"https://huggingface.co/datasets/{spec.hub_id}, then log in with `huggingface-cli login` (or set "
            f"HF_TOKEN); or pass {local}. ({detail})"
        )
    if any(_is_connection(e) for e in chain):  # offline mode surfaces as a ConnectionError too
        cause = (
            f"HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set and {spec.where} is not in the local cache"
            if _offline()
            else f"the Hugging Face Hub cannot be reached for {spec.where}"
        )
        return DataPreparationError(
            f"{spec.hub_id} cannot be downloaded: {cause}. Go online (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) "
            f"and run again, or pass {local}. ({detail})"
        )
    not_found = ("DatasetNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError")
    if any(type(e).__name__ in not_found for e in chain):
        asked = f" at revision {revision!r}" if revision else ""
        return DataPreparationError(
            f"{spec.where} was not found on the hub{asked} (or it is private: `huggingface-cli login`); check "
            f"--revision {spec.key}=REV, or pass {local}. ({detail})"
        )
    return DataPreparationError(f"Loading {spec.where} failed: {detail}. A local copy can be passed with {local}.")


def _load_hub(spec: Source, revision: str | None) -> Any:
    import datasets

    try:
        return datasets.load_dataset(spec.hub_id, spec.config, split=spec.split, revision=revision)
    except Exception as err:  # rephrased with the dataset and the fix; the original error is chained
        raise _explain(err, spec, revision) from err


def _hub_revision(dataset: Any, spec: Source, revision: str | None) -> str:
    """The commit the rows came from: from the cache path ``datasets`` keys by commit, else asked from the hub."""
    for cached in getattr(dataset, "cache_files", None) or []:
        match = re.search(r"[/\\]([0-9a-f]{40})[/\\]", cached.get("filename", ""))
        if match:
            return match.group(1)
    if not _offline():
        try:
            from huggingface_hub import HfApi

            sha = HfApi().dataset_info(spec.hub_id, revision=revision).sha
            if sha:
                return sha
        except Exception:  # the revision is informative only; the rows were loaded
            pass
    return revision or "unresolved"


def _matches(part: str, name: str) -> bool:
    return re.search(rf"(^|[-_.]){re.escape(name)}([-_.]|$)", part) is not None


def _local_files(path: Path, spec: Source) -> list[Path]:
    """The data files of a local copy: the file itself, or those of a folder (narrowed to the config and split)."""
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix in LOCAL_FORMATS and not any(s.startswith(".") for s in p.relative_to(path).parts)
    )
    # A snapshot of a hub repository holds every config and split (``ARC-Easy/test-*.parquet``): keep ours.
    for name in filter(None, (spec.config, spec.split)):
        files = [f for f in files if any(_matches(s, name) for s in f.relative_to(path).parts)] or files
    if not files:
        raise DataPreparationError(f"--source {spec.key}={path}: the folder holds no {', '.join(LOCAL_FORMATS)} file.")
    if len({LOCAL_FORMATS[f.suffix] for f in files}) > 1:
        raise DataPreparationError(
            f"--source {spec.key}={path}: mixed file types ({', '.join(sorted({f.suffix for f in files}))}); point "
            "at one file or a folder of one type."
        )
    return files


def _load_local(path: Path, spec: Source) -> Any:
    import datasets

    if not path.exists():
        raise DataPreparationError(f"--source {spec.key}={path}: no such file or folder.")
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(path))  # a folder written by Dataset(Dict).save_to_disk
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise DataPreparationError(f"--source {spec.key}={path}: no {spec.split!r} split ({list(loaded)}).")
            loaded = loaded[spec.split]
        return loaded
    files = _local_files(path, spec)
    print(f"[prepare] {spec.key}: reading {', '.join(str(f) for f in files)}", flush=True)
    try:
        return datasets.load_dataset(LOCAL_FORMATS[files[0].suffix], data_files=[str(f) for f in files], split="train")
    except Exception as err:
        raise DataPreparationError(f"--source {spec.key}={path} cannot be read: {type(err).__name__}: {err}") from err


# ---- writing -------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, payload: Any) -> None:
    """Write atomically (temporary file in the same folder, then rename): readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # created with the usual permissions (umask)
            json.dump(payload, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataPreparationError(f"{path} is not valid JSON ({err}); repair or delete it and run again.") from err
    if not isinstance(content, dict):
        raise DataPreparationError(f"{path} does not hold a JSON object; repair or delete it and run again.")
    return content


def register_dataset(data_dir: str | Path, name: str, entry: dict[str, Any] | None = None) -> None:
    """Merge ``name`` into ``dataset_info.json`` (LLaMA-Factory's alpaca columns) and ``entry`` into the manifest.

    Other entries of both files are kept. The dataset file ``<name>.json`` is expected to exist already; the manifest
    is written last, so it never vouches for a file that was not completely written.

    Args:
        data_dir: The folder of the prepared sets.
        name: LLaMA-Factory dataset name (the file is ``<name>.json``).
        entry: The manifest entry; None leaves the manifest alone.
    """
    data_dir = Path(data_dir)
    info = _read_json(data_dir / DATASET_INFO)
    wanted = {"file_name": f"{name}.json", "columns": dict(ALPACA_COLUMNS)}
    if info.get(name) != wanted:
        info[name] = wanted
        _write_json(data_dir / DATASET_INFO, info)
    if entry is not None:
        manifest = _read_json(data_dir / MANIFEST)
        manifest[name] = entry
        _write_json(data_dir / MANIFEST, manifest)


def prepare_dataset(
    key: str,
    data_dir: str | Path,
    samples: int | None = None,
    seed: int = 42,
    source: str | Path | None = None,
    revision: str | None = None,
    name: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Prepare one training set; skipped when the manifest records the same settings and the file is intact.

    Args:
        key: A key of :data:`SOURCES`.
        data_dir: Output folder (``data/paper``).
        samples: Rows drawn at random (seeded); None keeps the whole split (in a seeded order).
        seed: Sampling seed.
        source: A local copy of the split in the dataset's own schema (a .json/.jsonl/.parquet file, a folder of
            them such as a hub snapshot, or a ``save_to_disk`` folder) used instead of the Hugging Face Hub.
        revision: Hub revision (branch, tag or commit) to load; default the latest.
        name: Dataset name to write (default :func:`dataset_name`). A capped smoke run keeps the recipe's name; the
            manifest records the real sample count, so a later full run rebuilds the file.
        force: Rebuild even when the manifest says the file is up to date.

    Returns:
        The manifest entry of the prepared set.

    Raises:
        DataPreparationError: Unknown key, too many samples, dataset unreachable (offline, gated, not found), or rows
            not in the expected schema; the message says what to do.
    """
    spec = get_source(key)
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise DataPreparationError(f"samples must be a positive integer or None (the whole split), got {samples!r}.")
    name = name or dataset_name(key, samples)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise DataPreparationError(f"Dataset name {name!r} must be letters, digits, '_', '.' or '-'.")
    data_dir = Path(data_dir)
    target = data_dir / f"{name}.json"
    settings = {
        "key": key,
        "hub_id": spec.hub_id,
        "config": spec.config,
        "split": spec.split,
        "source": f"local:{Path(source).resolve()}" if source else "hub",
        "requested_revision": revision,
        "samples": samples,
        "seed": seed,
        "format_version": FORMAT_VERSION,
    }
    previous = _read_json(data_dir / MANIFEST).get(name)
    same = isinstance(previous, dict) and {k: previous.get(k) for k in settings} == settings
    if not force and same and target.is_file() and _sha256(target) == previous.get("sha256"):
        register_dataset(data_dir, name)  # in case dataset_info.json was lost
        print(f"[prepare] {name}: up to date ({previous.get('rows')} rows, sha256 matches), skipped", flush=True)
        return previous

    print(f"[prepare] {name}: loading {spec.where if source is None else settings['source']}", flush=True)
    if source is not None:
        dataset = _load_local(Path(source), spec)
        resolved = settings["source"]
    else:
        dataset = _load_hub(spec, revision)
        resolved = _hub_revision(dataset, spec, revision)
        if spec.expected_rows is not None and len(dataset) != spec.expected_rows:
            print(
                f"[prepare] warning: {spec.where} has {len(dataset)} rows, {spec.expected_rows} expected; the hub "
                f"copy may have changed (revision {resolved}).",
                flush=True,
            )
    total = len(dataset)
    if samples is not None and samples > total:
        raise DataPreparationError(
            f"{key}: {samples} samples asked but {spec.where if source is None else source} has only {total} rows; "
            f"ask for at most {total}."
        )
    missing = [c for c in spec.columns if c not in dataset.column_names]
    if missing:
        raise DataPreparationError(
            f"{key}: the rows lack the columns {missing} (they have {dataset.column_names}); the converter expects "
            f"the schema of {spec.hub_id}."
        )

    indices = sample_indices(total, samples, seed)
    records = []
    for index, row in zip(indices, dataset.select(indices)):
        try:
            records.append(spec.convert(row))
        except (KeyError, ValueError, IndexError, TypeError, AttributeError) as err:
            raise DataPreparationError(
                f"{key}: row {index} cannot be converted ({type(err).__name__}: {err}); the converter expects the "
                f"schema of {spec.hub_id}."
            ) from err
    _write_json(target, records)
    entry = {
        **settings,
        "name": name,
        "revision": resolved,
        "source_rows": total,
        "expected_rows": spec.expected_rows,
        "rows": len(records),
        "file": target.name,
        "sha256": _sha256(target),
        "prepared": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    register_dataset(data_dir, name, entry)
    print(f"[prepare] {name}: {len(records)} of {total} rows -> {target}", flush=True)
    return entry
