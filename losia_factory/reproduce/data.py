r"""Training sets of the papers: load, sample with a fixed seed, convert to LLaMA-Factory's alpaca format.

``prepare_dataset`` writes ``<data_dir>/<name>.json`` (a list of ``{"instruction", "input", "output"}`` records),
merges its entry into ``<data_dir>/dataset_info.json`` and records where the rows came from (hub id, config, split,
resolved commit), the sample count, the seed and the file's sha256 in ``<data_dir>/manifest.json``. A second call with
the same settings finds the manifest entry and an intact file and does nothing. Every file is written to a temporary
name and renamed, so an interrupted run never leaves a half-written file under a real name.

Sampling draws a permutation of the whole split from ``numpy.random.default_rng(seed)`` and keeps its first ``N``
rows, so a 30K sample is a prefix of the 50K sample, itself a prefix of the 70K sample (Table 4's data scaling).

The converters (:mod:`.converters`) say how rows become records, the sources (:mod:`.sources`) where the rows
come from, and :mod:`.datafiles` how the prepared files are recorded.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ..fileio import write_json_atomic
from .converters import hellaswag_clean
from .datafiles import MANIFEST, read_json_object, register_dataset, sha256_of
from .sources import SOURCES, DataPreparationError, Source, get_source, hub_revision, load_hub, load_local

FORMAT_VERSION = 1  # bump when a converter's output changes: prepared files are then rebuilt

__all__ = [
    "FORMAT_VERSION",
    "SOURCES",
    "DataPreparationError",
    "Source",
    "dataset_name",
    "get_source",
    "hellaswag_clean",
    "prepare_dataset",
    "register_dataset",
    "sample_indices",
]


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
    previous = read_json_object(data_dir / MANIFEST).get(name)
    same = isinstance(previous, dict) and {k: previous.get(k) for k in settings} == settings
    if not force and same and target.is_file() and sha256_of(target) == previous.get("sha256"):
        register_dataset(data_dir, name)  # in case dataset_info.json was lost
        print(f"[prepare] {name}: up to date ({previous.get('rows')} rows, sha256 matches), skipped", flush=True)
        return previous

    print(f"[prepare] {name}: loading {spec.where if source is None else settings['source']}", flush=True)
    if source is not None:
        dataset = load_local(Path(source), spec)
        resolved = settings["source"]
    else:
        dataset = load_hub(spec, revision)
        resolved = hub_revision(dataset, spec, revision)
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
    write_json_atomic(target, records)
    entry = {
        **settings,
        "name": name,
        "revision": resolved,
        "source_rows": total,
        "expected_rows": spec.expected_rows,
        "rows": len(records),
        "file": target.name,
        "sha256": sha256_of(target),
        "prepared": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    register_dataset(data_dir, name, entry)
    print(f"[prepare] {name}: {len(records)} of {total} rows -> {target}", flush=True)
    return entry
