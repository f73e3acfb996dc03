"""Atomic file writes: readers (a resumed run, a concurrent job, a crash) never see a partial file."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a uniquely named temporary file in the same folder, then rename it.

    The temporary name carries the process id and a random suffix, so concurrent writers never share it; the rename
    is atomic on POSIX and Windows. The folder is created when missing. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as handle:  # created with the usual permissions (umask)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_file_atomic(path: str | os.PathLike[str], write: Callable[[str], Any]) -> Path:
    """Have ``write(tmp)`` create the file under a unique temporary name beside ``path``; fsync it; rename it.

    For writers that take a file name (``safetensors.torch.save_file``, ``torch.save``). The folder is created when
    missing; the temporary file is removed if ``write`` fails. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike[str], payload: Any, *, sort_keys: bool = False) -> Path:
    """:func:`write_text_atomic` of ``payload`` as indented JSON (non-ASCII kept as is) with a final newline."""
    return write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n")
