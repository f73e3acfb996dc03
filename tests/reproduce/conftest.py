"""Offline stand-ins for the reproduction kit: a tiny LLaMA and lm-eval tasks over local files in the real schemas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from losia_factory.reproduce.evaluation import TASKS_DIR

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from losia_factory.demo import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> Path:
    """lm-eval task folder: tiny_gsm8k (GSM8K schema, generation), tiny_arc (ARC schema, log-likelihood) and
    tiny_mbpp (MBPP schema, our pass@k over sampled programs); the YAMLs point at absolute data paths."""
    root = tmp_path_factory.mktemp("tasks")
    gsm8k = [{"question": f"Tom has {i} apples and buys {i}. How many?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}
             for i in range(1, 9)]  # fmt: skip
    arc = [
        {
            "id": f"q{i}",
            "question": f"Which number is larger, {i} or {i + 5}?",
            "choices": {"text": [str(i), str(i + 5)], "label": ["A", "B"]},
            "answerKey": "B",
        }
        for i in range(6)
    ]
    # Half the problems accept any program, half none: pass@k is then exactly 50 whatever the model writes.
    mbpp = [{"task_id": i, "text": f"Return {i}.", "code": f"def f():\n    return {i}",
             "test_list": ["assert True", "assert 1 == 1", "assert 2 == 2"] if i % 2 else
             ["assert False", "assert 1 == 1", "assert 2 == 2"]} for i in range(4)]  # fmt: skip
    for name, rows in (("gsm8k", gsm8k), ("arc", arc), ("mbpp", mbpp)):
        (root / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for template in FIXTURES.glob("tiny_*.yaml.in"):
        text = template.read_text().replace("@DATA@", str(root))
        (root / template.name.removesuffix(".in")).write_text(text)
    shutil.copy(TASKS_DIR / "code_utils.py", root / "code_utils.py")
    return root
