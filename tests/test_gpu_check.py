"""scripts/gpu_check.sh --dry-run: every section of the GPU check runs on the CPU with tiny sizes (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from losia_factory.bench import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_runs_every_section_and_writes_the_summary(tmp_path):
    pytest.importorskip("llamafactory")
    pytest.importorskip("deepspeed")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sections = [line.split("\t") for line in (out / "sections.tsv").read_text().splitlines()]
    assert [(s[0], s[1]) for s in sections] == [
        (name, "ok") for name in ("env", "bench_1b", "bench_7b", "smoke", "deepspeed")
    ]
    bench = json.loads((out / "bench_1b.json").read_text())
    assert bench["model"]["dtype"] == "float32" and not bench["failed"]
    expected = {"floor", "losia_pro", "losia", "lora", "dora", "galore", "full"}
    assert expected <= set(METHODS) and set(bench["methods"]) == expected | {m + "_gc" for m in expected}
    assert bench["methods"]["losia_pro"]["cycle_us_per_token"] > 0
    smoke = json.loads((out / "smoke_results.json").read_text())["runs"]["losia_pro@0.001"]
    assert 0.0 <= smoke["accuracy"] <= 100.0 and smoke["answer_nll"] > 0
    log = [json.loads(line) for line in (out / "deepspeed_losia_log.jsonl").read_text().splitlines()]
    assert any(entry.get("event") == "reselect" for entry in log)
    summary = (out / "summary.md").read_text()
    assert "Dry run on the CPU" in summary and "| bench_1b | ok |" in summary
    assert "| no checkpointing | time of the floor | <= 1.05x |" in summary
    assert "## DeepSpeed ZeRO-2, one process" in summary and "| losia_pro@0.001 | " in summary
    assert summary.strip() in result.stdout
