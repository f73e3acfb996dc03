"""Regenerate docs/errors.md: every bad setting of tests/llamafactory/bad_inputs.py through the real parser."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the table lives in the test suite

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.llamafactory.bad_inputs import BAD_INPUTS, errors_markdown, prepare_work, refusal  # noqa: E402
from tests.llamafactory.conftest import build_test_assets  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_test_assets(Path(tmp) / "assets")
        work = Path(tmp) / "work"
        prepare_work(work, paths["data"])
        messages = [(row, refusal(row, work)) for row in BAD_INPUTS]
        (ROOT / "docs" / "errors.md").write_text(errors_markdown(messages, work), encoding="utf-8")
    print(f"wrote docs/errors.md ({len(messages)} refused settings)")
