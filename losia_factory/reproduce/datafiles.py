"""The files of a prepared-data folder: LLaMA-Factory's ``dataset_info.json`` and our ``manifest.json``.

Every file is written to a temporary name and renamed (:mod:`losia_factory.fileio`), so an interrupted run never
leaves a half-written file under a real name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..fileio import write_json_atomic
from .sources import DataPreparationError

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
DATASET_INFO = "dataset_info.json"
MANIFEST = "manifest.json"


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (``{}`` when the file is missing); anything else is a DataPreparationError."""
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
    info = read_json_object(data_dir / DATASET_INFO)
    wanted = {"file_name": f"{name}.json", "columns": dict(ALPACA_COLUMNS)}
    if info.get(name) != wanted:
        info[name] = wanted
        write_json_atomic(data_dir / DATASET_INFO, info)
    if entry is not None:
        manifest = read_json_object(data_dir / MANIFEST)
        manifest[name] = entry
        write_json_atomic(data_dir / MANIFEST, manifest)
