"""Execution-based pass@k for MBPP-style tasks: run each candidate against the task's asserts in a subprocess.

lm-eval loads this module by file path (``!function code_utils.<name>`` in the task YAML), so it imports only the
standard library. Running generated code is unsafe: lm-eval asks for ``--confirm_run_unsafe_code``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile

TIMEOUT_S = 10.0


def pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` pass (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def passes(program: str, tests: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether ``program`` followed by ``tests`` (assert statements) exits cleanly within ``timeout`` seconds."""
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "candidate.py")
        with open(path, "w") as f:
            f.write(program + "\n\n" + tests + "\n")
        try:
            result = subprocess.run(
                [sys.executable, "-I", path], cwd=work, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0


def keep_all_candidates(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval filter: keep every sampled completion of a document (the default keeps only the first)."""
    return [list(r) for r in resps]


def _pass_at(k: int, references: list[str], predictions: list[list[str]]) -> float:
    tests = references[0]
    candidates = predictions[0]
    if isinstance(candidates, str):
        candidates = [candidates]
    correct = sum(passes(c, tests) for c in candidates)
    return pass_at_k_estimate(len(candidates), correct, min(k, len(candidates)))


def pass_at_1(references: list[str], predictions: list[list[str]]) -> float:
    """pass@1 of one document's candidates (greedy decoding: one candidate)."""
    return _pass_at(1, references, predictions)


def pass_at_10(references: list[str], predictions: list[list[str]]) -> float:
    """pass@10 of one document's candidates (10 samples)."""
    return _pass_at(10, references, predictions)


def mbpp_fewshot_samples() -> list[dict]:
    """The three MBPP prompt-split problems (task ids 2, 3, 4) used as the 3-shot examples, as in the MBPP paper."""
    return [
        {
            "task_id": 2,
            "text": "Write a function to find the similar elements from the given two tuple lists.",
            "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
            "  return (res) ",
            "test_list": [
                "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
            ],
            "is_fewshot": True,
        },
        {
            "task_id": 3,
            "text": "Write a python function to identify non-prime numbers.",
            "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n"
            "    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n"
            "            result = True\r\n    return result",
            "test_list": [
                "assert is_not_prime(2) == False",
                "assert is_not_prime(10) == True",
                "assert is_not_prime(35) == True",
            ],
            "is_fewshot": True,
        },
        {
            "task_id": 4,
            "text": "Write a function to find the largest integers from a given list of numbers using heap queue "
            "algorithm.",
            "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n"
            "  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
            "test_list": [
                "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]",
            ],
            "is_fewshot": True,
        },
    ]
