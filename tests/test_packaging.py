"""The wheel carries the import hook's .pth file, the package data and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("losia_factory-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "losia_factory.pth" in names
    assert {
        "losia_factory/_import_hook.py",
        "losia_factory/resources/demo_arithmetic.json",
        "losia_factory/core/optimizer.py",
        "losia_factory/llamafactory/patches.py",
        "losia_factory/reproduce/paper_results.json",  # data files the reproduction kit reads at run time
        "losia_factory/reproduce/lm_eval_tasks/losia_mbpp_pass_at_10.yaml",
        "losia_factory/reproduce/lm_eval_tasks/code_utils.py",
        "losia_factory/py.typed",  # PEP 561: type checkers read the package's annotations
    } <= names
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "losia-factory = losia_factory.cli:main" in zipfile.ZipFile(wheel).read(meta).decode()
    pth = zipfile.ZipFile(wheel).read("losia_factory.pth").decode()
    assert pth.startswith("import ") and "losia_factory._import_hook" in pth and "LOSIA_FACTORY_DISABLE" in pth


def test_pth_line_is_what_site_executes():
    line = (ROOT / "losia_factory.pth").read_text().strip()
    assert "\n" not in line and line.startswith("import ")  # site.py executes lines that start with "import"
