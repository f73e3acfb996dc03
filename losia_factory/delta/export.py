"""``losia-factory delta export``: the entries a run changed, relative to its base model, as a small folder.

The folder holds

* ``delta.safetensors``: per changed tensor ``<name>::values`` with ``<name>::indices`` or ``<name>::mask``, or
  ``<name>::dense`` (see :mod:`.encoding`); its header metadata names the base model and its checksum;
* ``delta.json``: the manifest: base model id and sha256 of its weights (see
  :func:`~losia_factory.model_files.weights_checksum`), the sha256 the rebuilt weights must have, every tensor's
  encoding and count of changed entries, the trained model's file layout, and the sizes;
* ``files/``: the run's small non-weight files (config, generation config, tokenizer), so the rebuilt folder loads.

The changed entries are found by comparing bits, whatever the method, so ``apply`` is exact for any full-model run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..fileio import write_json_atomic
from ..model_files import WeightReader, update_checksum
from .encoding import encode

DELTA_FILE = "delta.safetensors"
MANIFEST_FILE = "delta.json"
FILES_DIR = "files"
FORMAT_VERSION = 1
SEPARATOR = "::"
# The non-weight files save_pretrained and the tokenizer write; all small, all needed to load the rebuilt model.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def base_model_id(run_dir: Path, base: Path) -> str:
    """The base model's id: the one the run recorded in ``losia_subnets.jsonl`` when there is one, else ``base``."""
    subnets = run_dir / "losia_subnets.jsonl"
    if subnets.is_file():
        with open(subnets, encoding="utf-8") as handle:
            first = json.loads(handle.readline() or "{}")
        recorded = (first.get("base_model") or {}).get("name_or_path")
        if recorded:
            return str(recorded)
    return str(base)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; choose a new folder.")


def export_delta(run_dir: str | os.PathLike[str], base: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict:
    """Write the delta of ``run_dir`` (a full model) against ``base`` into the new folder ``out``.

    Returns:
        The manifest (also written as ``out/delta.json``), with ``"sizes"``: ``delta_bytes`` (``delta.safetensors``),
        ``full_bytes`` (the run's weight files) and ``ratio``.

    Raises:
        NotAFullModelError: ``run_dir`` or ``base`` holds no full safetensors model.
        FileExistsError: ``out`` exists and is not empty.
    """
    from safetensors.torch import save_file

    run_dir, base, out = Path(run_dir), Path(base), Path(out)
    trained_reader = WeightReader(run_dir, "RUN_DIR")
    base_reader = WeightReader(base, "--base")
    _check_out(out)
    base_digest, merged_digest = hashlib.sha256(), hashlib.sha256()
    stored: dict[str, Any] = {}
    entries: dict[str, dict[str, Any]] = {}
    changed_total = numel_total = 0
    with trained_reader, base_reader:
        base_names, trained_names = set(base_reader.names()), set(trained_reader.names())
        # One pass in name order feeds both checksums exactly as weights_checksum would.
        for name in sorted(base_names | trained_names):
            base_tensor = base_reader.get(name) if name in base_names else None
            if base_tensor is not None:
                update_checksum(base_digest, name, base_tensor)
            if name not in trained_names:
                continue
            trained = trained_reader.get(name)
            update_checksum(merged_digest, name, trained)
            numel_total += trained.numel()
            encoded = encode(base_tensor, trained)
            if encoded is None:
                continue
            encoding, tensors, changed = encoded
            changed_total += changed
            entries[name] = {
                "encoding": encoding,
                "changed": changed,
                "numel": trained.numel(),
                "shape": list(trained.shape),
                "dtype": str(trained.dtype).removeprefix("torch."),
            }
            for key, tensor in tensors.items():
                stored[f"{name}{SEPARATOR}{key}"] = tensor
        layout: dict[str, list[str]] = {}
        for name, file in trained_reader.files.items():
            layout.setdefault(file, []).append(name)
        file_metadata = {file: trained_reader.metadata(file) for file in layout}
        full_bytes = trained_reader.file_bytes()
    base_id = base_model_id(run_dir, base)
    manifest: dict[str, Any] = {
        "format": "losia-factory-delta",
        "version": FORMAT_VERSION,
        "base_model": base_id,
        "base_sha256": base_digest.hexdigest(),
        "merged_sha256": merged_digest.hexdigest(),
        "run_dir": str(run_dir.resolve()),
        "tensors": entries,
        "removed": sorted(base_names - trained_names),
        "layout": {file: sorted(names) for file, names in sorted(layout.items())},
        "file_metadata": file_metadata,
        "changed_entries": changed_total,
        "total_entries": numel_total,
    }
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "base_model": base_id, "base_sha256": manifest["base_sha256"]}
    save_file(stored, str(out / DELTA_FILE), metadata=metadata)
    copied = []
    for file in MODEL_FILES:
        if (run_dir / file).is_file():
            (out / FILES_DIR).mkdir(exist_ok=True)
            shutil.copyfile(run_dir / file, out / FILES_DIR / file)
            copied.append(file)
    delta_bytes = (out / DELTA_FILE).stat().st_size
    manifest["files"] = copied
    manifest["sizes"] = {
        "delta_bytes": delta_bytes,
        "full_bytes": full_bytes,
        "ratio": delta_bytes / full_bytes if full_bytes else None,
    }
    write_json_atomic(out / MANIFEST_FILE, manifest)
    return manifest
