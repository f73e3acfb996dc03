"""scripts/upstream_tests.py (make test-upstream): source extraction, outcome comparison and the LLaMA-3 stand-in."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("upstream_tests", ROOT / "scripts" / "upstream_tests.py")
assert spec is not None and spec.loader is not None
upstream = importlib.util.module_from_spec(spec)
spec.loader.exec_module(upstream)

SAMPLE_TESTS = """
import pytest

def test_ok():
    pass

def test_bad():
    pretrained_model_name_or_path = "llamafactory/tiny-random-Llama-4"
    raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {pretrained_model_name_or_path}")

@pytest.mark.skip(reason="gated model")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known")
def test_known():
    assert False

@pytest.mark.parametrize("x", [1, 2])
def test_param(x):
    assert x == 1
"""


def _junit(tmp_path: Path, name: str, source: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "test_sample.py").write_text(source)
    xml = folder / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", "-o",
         "junit_family=xunit1", "test_sample.py"],
        cwd=folder,
        capture_output=True,
        check=False,
    )  # fmt: skip
    return xml


def test_outcomes_are_read_from_pytest_reports_and_differences_found(tmp_path):
    stock = upstream.read_outcomes(_junit(tmp_path, "a", SAMPLE_TESTS))
    assert {test_id.split("::")[-1]: outcome for test_id, (outcome, _) in stock.items()} == {
        "test_ok": "passed",
        "test_bad": "failed",
        "test_skipped": "skipped",
        "test_known": "xfailed",
        "test_param[1]": "passed",
        "test_param[2]": "failed",
    }
    assert upstream.compare({"stock": stock, "losia": dict(stock)}) == []

    changed = upstream.read_outcomes(_junit(tmp_path, "b", SAMPLE_TESTS.replace("assert x == 1", "assert x")))
    differences = upstream.compare({"stock": stock, "losia": changed})
    assert [(t.split("::")[-1], modes) for t, modes in differences] == [
        ("test_param[2]", {"stock": "failed", "losia": "passed"})
    ]
    del changed[next(iter(changed))]
    assert any(modes["losia"] == "absent" for _, modes in upstream.compare({"stock": stock, "losia": changed}))

    bad = next(v for k, v in stock.items() if k.endswith("test_bad"))
    assert upstream.why_not_run(*bad) == "needs llamafactory/tiny-random-Llama-4 from the Hugging Face Hub (offline)"
    report = upstream.report({"stock": stock, "losia": dict(stock)}, {"stock": 1.0, "losia": 1.0})
    assert "Outcomes differing between the modes: 0" in report and "skipped: gated model" in report


def _source_tree(root: Path, version: str) -> Path:
    (root / "tests" / "model").mkdir(parents=True)
    (root / "tests" / "conftest.py").write_text("")
    (root / "tests" / "model" / "test_x.py").write_text("def test_x():\n    pass\n")
    (root / "tests" / "version.txt").write_text(f"# change if test fails\n{version}\n")
    return root


def test_tests_are_extracted_from_a_tree_an_sdist_or_a_git_tag(tmp_path):
    tree = _source_tree(tmp_path / "LLaMA-Factory", "0.9.5.108")
    upstream.extract_tests(tree, tmp_path / "from_tree")
    assert (tmp_path / "from_tree" / "tests" / "model" / "test_x.py").is_file()

    sdist = tmp_path / "llamafactory-0.9.5.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tree, arcname="llamafactory-0.9.5")
    upstream.extract_tests(sdist, tmp_path / "from_sdist")
    assert (tmp_path / "from_sdist" / "tests" / "model" / "test_x.py").is_file()

    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"], ["tag", "v0.9.5"]):
        subprocess.run([*git, *command], check=True)
    (tree / "tests" / "version.txt").write_text("0.9.6\n")  # the work tree moved on; the tag is what counts
    upstream.extract_tests(tree, tmp_path / "from_git")
    assert "0.9.5.108" in (tmp_path / "from_git" / "tests" / "version.txt").read_text()

    subprocess.run([*git, "tag", "-d", "v0.9.5"], check=True, capture_output=True)
    with pytest.raises(SystemExit, match=r"holds the tests of LLaMA-Factory 0\.9\.6, not 0\.9\.5"):
        upstream.extract_tests(tree, tmp_path / "wrong_version")
    with pytest.raises(SystemExit, match=r"LLAMAFACTORY_SOURCE=.* is not a LLaMA-Factory source.*git clone --branch"):
        upstream.extract_tests(tmp_path / "nothing", tmp_path / "none")


def test_the_llama3_stand_in_encodes_like_llamafactory_llama3_template():
    """The upstream data tests compare LLaMA-Factory's llama3 template with the tokenizer's own chat template."""
    pytest.importorskip("llamafactory")
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    tokenizer = upstream.build_llama3_tokenizer()
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="llama3"))
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 49 plus 97?"},
        {"role": "assistant", "content": "49 plus 97 is 146."},
    ]
    prompt, answer = template.encode_oneturn(tokenizer, messages[1:], system=messages[0]["content"])
    assert prompt + answer == tokenizer.apply_chat_template(messages)["input_ids"]
    assert prompt == tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True)["input_ids"]
    assert set(template.get_stop_token_ids(tokenizer)) == {128008, 128009}  # LLaMA-3's <|eom_id|>, <|eot_id|>
