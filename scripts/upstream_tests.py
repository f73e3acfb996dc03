"""Run LLaMA-Factory 0.9.5's own unit tests with and without losia-factory's import hook; the outcomes must match.

The upstream tests are not part of this repository: they are taken at run time from a LLaMA-Factory v0.9.5 source
named by ``LLAMAFACTORY_SOURCE`` (a git clone or mirror with the tag ``v0.9.5``, an extracted source tree, or a
source archive that holds ``tests/``). Nothing is downloaded: the Hub models and datasets the tests ask
for get offline stand-ins, built here in the working folder under the Hub ids the tests use (``from_pretrained`` and
``load_dataset`` read a local folder of that relative name first), plus a Hub-cache entry for the one file they fetch
with ``hf_hub_download``. The stand-ins are random: tests that compare against the real models' outputs fail in both
modes alike, and tests needing models with no stand-in fail for want of a download; both are listed in the report.

Usage: ``LLAMAFACTORY_SOURCE=<path> python scripts/upstream_tests.py [--work DIR] [pytest args]`` (``make
test-upstream``). Exit status 0 when every test has the same outcome in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

TAG = "v0.9.5"
MODES = ("stock", "losia")  # stock: LOSIA_FACTORY_DISABLE=1 (no hook); losia: the hook active, as users run it
HOW_TO_GET = (
    "Set LLAMAFACTORY_SOURCE to a LLaMA-Factory v0.9.5 source holding its tests/: a clone (git clone --branch "
    "v0.9.5 https://github.com/hiyouga/LLaMA-Factory), an extracted source tree, or a source archive (.tar.gz)."
)
# Failure texts that mean "this needs a download": the test cannot run offline, whatever the mode.
_OFFLINE = re.compile(
    r"(?:couldn't connect to|offline mode|OfflineModeIsEnabled|LocalEntryNotFoundError|is not a local folder and is "
    r"not a valid model identifier|Cannot find the requested files in the local cache|outgoing traffic has been "
    r"disabled|Can't load (?:tokenizer|the configuration|config) for)",
    re.I,
)
# Where a traceback line names the model or dataset the test tried to fetch.
_REPO_ID = re.compile(
    r"""(?:pretrained_model_name_or_path|model_name_or_path|path_or_repo_id|repo_id)\s*=\s*['"]([\w.-]+/[\w.-]+)['"]"""
)


# -- the upstream tests -------------------------------------------------------------------------------------------


def extract_tests(source: Path, dest: Path) -> None:
    """Copy the ``tests/`` folder of LLaMA-Factory ``TAG`` from ``source`` into ``dest/tests``.

    A git repository is read at the tag (whatever its work tree holds); a folder or an sdist as it is.

    Raises:
        SystemExit: when ``source`` is none of the accepted forms, or holds another version.
    """
    target = dest / "tests"
    if target.exists():
        shutil.rmtree(target)
    dest.mkdir(parents=True, exist_ok=True)
    if _is_git(source) and _has_tag(source):
        archive = subprocess.run(
            ["git", f"--git-dir={_git_dir(source)}", "archive", TAG, "tests"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    elif (source / "tests" / "conftest.py").is_file():
        shutil.copytree(source / "tests", target)
    elif source.is_file() and source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if re.match(r"^[^/]+/tests/", m.name)]
            if not members:
                raise SystemExit(f"{source} holds no tests/ folder. {HOW_TO_GET}")
            for member in members:
                member.name = member.name.split("/", 1)[1]
            tar.extractall(dest, members=members, filter="data")
    else:
        raise SystemExit(f"LLAMAFACTORY_SOURCE={source} is not a LLaMA-Factory source. {HOW_TO_GET}")
    version = (target / "version.txt").read_text().split()[-1] if (target / "version.txt").exists() else "?"
    if not version.startswith("0.9.5"):
        raise SystemExit(f"{source} holds the tests of LLaMA-Factory {version}, not 0.9.5. {HOW_TO_GET}")


def _git_dir(source: Path) -> Path:
    return source / ".git" if (source / ".git").exists() else source


def _is_git(source: Path) -> bool:
    return source.is_dir() and (_git_dir(source) / "HEAD").is_file()


def _has_tag(source: Path) -> bool:
    command = ["git", f"--git-dir={_git_dir(source)}", "rev-parse", "--verify", "--quiet", f"{TAG}^{{commit}}"]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


# -- offline stand-ins --------------------------------------------------------------------------------------------

# LLaMA-3.1's special tokens, at its ids (128000 on), so that tests checking ids such as the stop tokens hold.
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"]
SPECIALS += ["<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>"]
SPECIALS += ["<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
SPECIALS += [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]
FIRST_SPECIAL_ID = 128000
# The LLaMA-3 chat format: a header per message, content trimmed, <|eot_id|> after each message.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# LLaMA-3's pre-tokenizer split: contractions, words with one leading non-letter, numbers of up to 3 digits,
# punctuation runs, newline runs, other whitespace.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)"
    r"|\s+"
)


def _sentences(count: int, seed: int) -> list[str]:
    """``count`` texts drawn from the bundled demo dataset (instructions, inputs and answers, some joined)."""
    import random

    from losia_factory.demo import demo_records

    texts = [t for record in demo_records() for t in record.values() if t]
    rng = random.Random(seed)
    return [" ".join(rng.sample(texts, rng.randint(1, 2))) for _ in range(count)]


def build_llama3_tokenizer(vocab_size: int = 600):
    """A byte-level BPE tokenizer with LLaMA-3's pre-tokenizer split, special tokens and their ids, BOS rule and chat
    template; ``vocab_size`` learned tokens, then unused fillers up to the special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_sentences(2000, seed=0), trainer=trainer)
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab.update({f"<|unused_{i}|>": i for i in range(len(vocab), FIRST_SPECIAL_ID)})
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    assert tokenizer.token_to_id("<|eot_id|>") == FIRST_SPECIAL_ID + 9
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", FIRST_SPECIAL_ID)],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    fast.chat_template = LLAMA3_TEMPLATE
    return fast


def build_models(root: Path) -> None:
    """``llamafactory/tiny-random-Llama-3``, its LoRA adapter and value-head variants, and LLaMA-3 8B's config.

    A LLaMA with LLaMA-3's layout in half precision, as the tests expect; the adapter covers every projection.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_llama3_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float16)  # the tests expect a half-precision checkpoint
    base = root / "llamafactory" / "tiny-random-Llama-3"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)

    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=projections))
    for name, param in lora.named_parameters():
        if "lora_B" in name:  # non-zero, so that loading or merging the adapter is visible in the weights
            torch.nn.init.normal_(param, std=0.02)
    lora.save_pretrained(root / "llamafactory" / "tiny-random-Llama-3-lora")
    model = lora.unload()

    # The gated LLaMA-3 instruct model, for its tokenizer and its 32-layer config (the tests read nothing else).
    instruct = root / "meta-llama" / "Meta-Llama-3-8B-Instruct"
    tokenizer.save_pretrained(instruct)
    LlamaConfig(**{**config.to_dict(), "num_hidden_layers": 32}).save_pretrained(instruct)

    valuehead = root / "llamafactory" / "tiny-random-Llama-3-valuehead"
    model.save_pretrained(valuehead)
    tokenizer.save_pretrained(valuehead)
    head = {"v_head.summary.weight": torch.randn(1, config.hidden_size), "v_head.summary.bias": torch.zeros(1)}
    # The tests expect the base model's value head (loaded with add_valuehead) to be the value-head model's one.
    for folder in (base, valuehead):
        save_file(head, str(folder / "value_head.safetensors"))
    # trl's AutoModelForCausalLMWithValueHead reads the head from the model's own weight file.
    from safetensors.torch import load_file

    weights = load_file(str(valuehead / "model.safetensors"))
    save_file({**weights, **head}, str(valuehead / "model.safetensors"), metadata={"format": "pt"})


def _write_dataset(folder: Path, configs: dict[str, list[dict]]) -> None:
    """A local dataset folder whose README declares one config per entry (``load_dataset(folder, name=...)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    card = ["---", "configs:"]
    for name, rows in configs.items():
        (folder / f"{name}.json").write_text(json.dumps(rows, indent=1))
        card += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}.json"]
    (folder / "README.md").write_text("\n".join([*card, "---", "Offline stand-in for LLaMA-Factory's tests.", ""]))


def build_datasets(root: Path, hub_cache: Path) -> None:
    """``llamafactory/tiny-supervised-dataset`` and ``llamafactory/demo_data`` (with its dataset_info.json)."""
    text = _sentences(400, seed=1)
    take = iter(text)

    def alpaca(count: int) -> list[dict]:
        return [
            {"instruction": next(take), "input": next(take) if i % 2 else "", "output": next(take)}
            for i in range(count)
        ]

    def chat(turns: int, system: bool) -> list[dict]:
        messages = [{"role": "system", "content": next(take)}] if system else []
        for _ in range(turns):
            messages += [{"role": "user", "content": next(take)}, {"role": "assistant", "content": next(take)}]
        return messages

    _write_dataset(root / "llamafactory" / "tiny-supervised-dataset", {"default": alpaca(24)})
    demo = {
        "alpaca_en_demo": alpaca(8),
        "c4_demo": [{"text": " ".join(next(take) for _ in range(3))} for _ in range(8)],
        "system_chat": [{"messages": chat(1 + i % 2, system=True)} for i in range(12)],
        "kto_en_demo": [{"messages": chat(1, system=False), "label": bool(i % 2)} for i in range(12)],
        "dpo_en_demo": [
            {
                "conversations": [{"from": "human", "value": next(take)}],
                "chosen": {"from": "gpt", "value": next(take)},
                "rejected": {"from": "gpt", "value": next(take)},
            }
            for _ in range(12)
        ],
    }
    _write_dataset(root / "llamafactory" / "demo_data", demo)
    repo = "llamafactory/demo_data"
    chat_tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    info = {
        "alpaca_en_demo": {"hf_hub_url": repo, "subset": "alpaca_en_demo"},
        "c4_demo": {"hf_hub_url": repo, "subset": "c4_demo", "columns": {"prompt": "text"}},
        "system_chat": {
            "hf_hub_url": repo,
            "subset": "system_chat",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {**chat_tags, "system_tag": "system"},
        },
        "kto_en_demo": {
            "hf_hub_url": repo,
            "subset": "kto_en_demo",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "kto_tag": "label"},
            "tags": chat_tags,
        },
        "dpo_en_demo": {
            "hf_hub_url": repo,
            "subset": "dpo_en_demo",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
    }
    (root / repo / "dataset_info.json").write_text(json.dumps(info, indent=1))
    # dataset_dir "REMOTE:llamafactory/demo_data" fetches dataset_info.json with hf_hub_download: a Hub-cache entry.
    revision = "0" * 40
    cached = hub_cache / "datasets--llamafactory--demo_data"
    (cached / "refs").mkdir(parents=True, exist_ok=True)
    (cached / "refs" / "main").write_text(revision)
    snapshot = cached / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / repo / "dataset_info.json", snapshot / "dataset_info.json")


# -- running and comparing ----------------------------------------------------------------------------------------


def read_outcomes(junit_xml: Path) -> dict[str, tuple[str, str]]:
    """``{test id: (outcome, message)}`` from a pytest JUnit XML report.

    The outcome is passed, failed, error, skipped or xfailed (pytest reports an unexpected pass as passed).
    """
    outcomes = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = ("failed" if child.tag == "failure" else "error"), child.get("message", "")
                message = message + "\n" + (child.text or "")
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfailed" if kind == "pytest.xfail" else "skipped"
                message = child.get("message", "")
        outcomes[test_id] = (outcome, message.strip())
    return outcomes


def compare(runs: dict[str, dict[str, tuple[str, str]]]) -> list[tuple[str, dict[str, str]]]:
    """The tests whose outcome differs between the modes (a test missing from a run counts as 'absent')."""
    ids = sorted(set().union(*runs.values()))
    differences = []
    for test_id in ids:
        per_mode = {mode: run.get(test_id, ("absent", ""))[0] for mode, run in runs.items()}
        if len(set(per_mode.values())) > 1:
            differences.append((test_id, per_mode))
    return differences


def counts(run: dict[str, tuple[str, str]]) -> dict[str, int]:
    result: dict[str, int] = {}
    for outcome, _ in run.values():
        result[outcome] = result.get(outcome, 0) + 1
    return dict(sorted(result.items()))


def why_not_run(outcome: str, message: str) -> str:
    """Why a test did not pass, in a few words: a missing download, a skip reason, or the first error line."""
    if outcome in ("skipped", "xfailed"):
        return f"{outcome}: {message.splitlines()[0] if message else ''}".strip()
    if _OFFLINE.search(message):
        match = _REPO_ID.search(message)
        repo = match.group(1) if match else None
        return f"needs {repo} from the Hugging Face Hub (offline)" if repo else "needs a Hub download (offline)"
    first = next((line for line in message.splitlines() if line.strip()), "")
    return f"{outcome}: {first[:200]}"


def report(runs: dict[str, dict[str, tuple[str, str]]], seconds: dict[str, float]) -> str:
    differences = compare(runs)
    stock = runs[MODES[0]]
    lines = ["# LLaMA-Factory 0.9.5 unit tests, with and without losia-factory", ""]
    for mode in MODES:
        lines.append(f"- {mode}: {len(runs[mode])} tests, {counts(runs[mode])}, {seconds[mode]:.0f} s")
    lines += ["", f"Outcomes differing between the modes: {len(differences)}", ""]
    for test_id, per_mode in differences:
        lines.append(f"- DIFFERENT {test_id}: {per_mode}")
    not_passed = [(t, o) for t, o in sorted(stock.items()) if o[0] != "passed"]
    if not_passed:
        lines += [
            "",
            f"Tests that do not pass here (the same in both modes unless listed above): {len(not_passed)}",
            "",
        ]
        lines += [f"- {t}: {why_not_run(*o)}" for t, o in not_passed]
    return "\n".join(lines) + "\n"


def run_mode(mode: str, work: Path, pytest_args: list[str]) -> tuple[dict[str, tuple[str, str]], float]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOSIA_FACTORY_DISABLE", "PYTEST_ADDOPTS")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(work / "hf_home"), WANDB_DISABLED="true")
    # Tests of gated models run only with a token; offline, a placeholder lets those with a stand-in run.
    env.setdefault("HF_TOKEN", "offline-placeholder")
    env["HF_HUB_CACHE"] = str(work / "hf_home" / "hub")
    if mode == "stock":
        env["LOSIA_FACTORY_DISABLE"] = "1"
    # The .pth file imports the hook at interpreter start-up unless LOSIA_FACTORY_DISABLE is set: check each mode
    # really runs the way it says.
    probe = [sys.executable, "-c", "import sys; print('losia_factory._import_hook' in sys.modules)"]
    active = subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip() == "True"
    if active != (mode == "losia"):
        raise SystemExit(f"the {mode} run would have the import hook {'on' if active else 'off'}: check the install")
    xml = work / f"junit-{mode}.xml"
    start = time.monotonic()
    command = [sys.executable, "-m", "pytest", "tests", "-p", "no:cacheprovider", "-q", f"--junitxml={xml}"]
    command += ["-o", "junit_family=xunit1", *pytest_args]
    log = work / f"pytest-{mode}.log"
    print(f"{mode}: running LLaMA-Factory's tests (output in {log})", flush=True)
    with log.open("w") as out:
        subprocess.run(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if not xml.exists():
        raise SystemExit(f"pytest wrote no report for the {mode} run; see {log}")
    return read_outcomes(xml), time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("upstream_tests"), help="working folder (recreated)")
    parser.add_argument("--source", type=Path, default=os.environ.get("LLAMAFACTORY_SOURCE"), help=argparse.SUPPRESS)
    args, pytest_args = parser.parse_known_args(argv)
    if args.source is None:
        raise SystemExit(f"LLAMAFACTORY_SOURCE is not set. {HOW_TO_GET}")
    work = args.work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    extract_tests(Path(args.source).resolve(), work)
    (work / "pytest.ini").write_text("[pytest]\n")  # the upstream tests run under their own settings, not ours
    os.environ["HF_HUB_OFFLINE"] = "1"
    build_models(work)
    build_datasets(work, work / "hf_home" / "hub")
    runs, seconds = {}, {}
    for mode in MODES:
        runs[mode], seconds[mode] = run_mode(mode, work, pytest_args)
    text = report(runs, seconds)
    (work / "report.md").write_text(text)
    print(text)
    return 1 if compare(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
