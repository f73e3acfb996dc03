"""Atomic writes: the whole text or nothing under the real name, unique temporary names, folders created."""

from __future__ import annotations

import json
import threading

import pytest

from losia_factory import fileio
from losia_factory.fileio import write_json_atomic, write_text_atomic


def test_text_lands_whole_in_a_new_folder(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    assert write_text_atomic(path, "héllo\n") == path
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]  # no temporary file left behind


def test_json_is_indented_keeps_non_ascii_and_ends_with_a_newline(tmp_path):
    path = write_json_atomic(tmp_path / "x.json", {"b": 1, "a": "é"}, sort_keys=True)
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "a": "é",\n  "b": 1\n}\n' and json.loads(text) == {"a": "é", "b": 1}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"v": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_concurrent_writers_never_share_a_temporary_name(tmp_path):
    path = tmp_path / "shared.json"
    errors = []

    def write(value):
        try:
            for _ in range(20):
                write_json_atomic(path, {"writer": value, "pad": "x" * 10_000})
        except Exception as err:  # collected: a shared temporary name would fail with FileExistsError
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert json.loads(path.read_text())["writer"] in range(4)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_a_file_writer_lands_whole_or_not_at_all(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    path = tmp_path / "sub" / "state.safetensors"
    tensors = {"a": torch.arange(6.0).reshape(2, 3)}
    assert fileio.write_file_atomic(path, lambda tmp: save_file(tensors, tmp)) == path
    assert torch.equal(load_file(str(path))["a"], tensors["a"])

    def broken(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half a header")  # a writer that dies midway
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        fileio.write_file_atomic(path, broken)
    assert torch.equal(load_file(str(path))["a"], tensors["a"])  # the old file is untouched
    assert [p.name for p in path.parent.iterdir()] == ["state.safetensors"]
