"""Where each training set of the papers comes from, and loading its rows from the Hugging Face Hub or a local copy.

Loading errors are rephrased as :class:`DataPreparationError`: which dataset, what went wrong (offline, gated, not
found) and what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .converters import (
    Doc,
    Record,
    convert_alpaca,
    convert_arc,
    convert_boolq,
    convert_hellaswag,
    convert_magicoder,
    convert_metamathqa,
    convert_openbookqa,
    convert_piqa,
    convert_social_iqa,
    convert_winogrande,
)

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


class DataPreparationError(RuntimeError):
    """A training set cannot be prepared; the message says why and what to do."""


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


def load_hub(spec: Source, revision: str | None) -> Any:
    """The split of ``spec`` from the Hugging Face Hub (or its cache); failures are explained."""
    import datasets

    try:
        return datasets.load_dataset(spec.hub_id, spec.config, split=spec.split, revision=revision)
    except Exception as err:  # rephrased with the dataset and the fix; the original error is chained
        raise _explain(err, spec, revision) from err


def hub_revision(dataset: Any, spec: Source, revision: str | None) -> str:
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


def load_local(path: Path, spec: Source) -> Any:
    """The split of ``spec`` from a local copy: a data file, a folder of them, or a ``save_to_disk`` folder."""
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
