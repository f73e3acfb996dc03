"""``losia-factory delta apply``: rebuild the full trained model from its base and a delta, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..model_files import WeightReader, weights_checksum
from .encoding import decode
from .export import DELTA_FILE, FILES_DIR, FORMAT_VERSION, MANIFEST_FILE, SEPARATOR


class BaseMismatchError(ValueError):
    """The base model given to ``apply`` is not the one the delta was made from."""


def read_manifest(delta_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a delta folder, with clear errors for a folder that is not one."""
    path = Path(delta_dir) / MANIFEST_FILE
    if not path.is_file() or not (Path(delta_dir) / DELTA_FILE).is_file():
        raise FileNotFoundError(
            f"DELTA {delta_dir} is not a delta folder (needs {MANIFEST_FILE} and {DELTA_FILE}); write one with "
            "`losia-factory delta export RUN_DIR --base BASE --out DELTA`."
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != "losia-factory-delta" or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: unsupported delta format {manifest.get('format')!r} version {manifest.get('version')!r} "
            f"(this losia-factory reads version {FORMAT_VERSION})."
        )
    return manifest


def apply_delta(
    delta_dir: str | os.PathLike[str], base: str | os.PathLike[str], out: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write the full trained model rebuilt from ``base`` and the delta in ``delta_dir`` into the new folder ``out``.

    The base's weights are checked against the delta's recorded sha256 before anything is written, and the rebuilt
    weights against the trained model's sha256 afterwards. The trained run's shard layout and file metadata are
    reproduced, and its config and tokenizer files copied.

    Returns:
        ``{"out": ..., "merged_sha256": ..., "tensors": count}``.

    Raises:
        BaseMismatchError: ``base`` is not the model the delta was made from.
        FileExistsError: ``out`` exists and is not empty.
        NotAFullModelError: ``base`` holds no safetensors weights.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    delta_dir, base, out = Path(delta_dir), Path(base), Path(out)
    manifest = read_manifest(delta_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; choose a new folder.")
    checksum = weights_checksum(base, "--base")
    if checksum != manifest["base_sha256"]:
        raise BaseMismatchError(
            f"--base {base} is not the model this delta was made from: its weights' sha256 is {checksum[:16]}..., "
            f"the delta needs {manifest['base_sha256'][:16]}... (base model {manifest['base_model']!r}). Pass the "
            "exact base model folder the run was trained from."
        )
    entries = manifest["tensors"]
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with WeightReader(base, "--base") as base_reader, safe_open(str(delta_dir / DELTA_FILE), framework="pt") as delta:
        base_names = set(base_reader.names())
        for file, names in manifest["layout"].items():
            shard = {}
            for name in names:
                base_tensor = base_reader.get(name) if name in base_names else None
                entry = entries.get(name)
                if entry is None:
                    if base_tensor is None:
                        raise ValueError(f"{delta_dir}: tensor {name} is neither in the delta nor in --base {base}")
                    shard[name] = base_tensor
                    continue
                keys = ("dense",) if entry["encoding"] == "dense" else (entry["encoding"], "values")
                stored = {key: delta.get_tensor(f"{name}{SEPARATOR}{key}") for key in keys}
                shard[name] = decode(base_tensor, entry["encoding"], stored)
                count += 1
            save_file(shard, str(out / file), metadata=manifest["file_metadata"].get(file) or None)
            del shard
    if len(manifest["layout"]) > 1:
        weight_map = {name: file for file, names in manifest["layout"].items() for name in names}
        total = sum((out / file).stat().st_size for file in manifest["layout"])
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
        )
    for file in manifest.get("files", []):
        shutil.copyfile(delta_dir / FILES_DIR / file, out / file)
    merged = weights_checksum(out, "--out")
    if merged != manifest["merged_sha256"]:
        raise RuntimeError(
            f"the rebuilt weights in {out} have sha256 {merged[:16]}..., the trained model had "
            f"{manifest['merged_sha256'][:16]}...: the delta folder is damaged."
        )
    return {"out": str(out), "merged_sha256": merged, "tensors": count}
