"""Offline demo assets: a tiny randomly initialized LLaMA with its own tokenizer, and the bundled dataset.

Everything is built locally in seconds, with no download, so that ``make demo`` and the end-to-end tests can run
``llamafactory-cli`` on any machine.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

DATASET_NAME = "demo_arithmetic"
DATASET_FILE = "demo_arithmetic.json"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def demo_records() -> list[dict[str, str]]:
    """The bundled instruction dataset (alpaca format: instruction / input / output)."""
    text = resources.files("losia_factory.resources").joinpath(DATASET_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def write_dataset(data_dir: str | Path) -> Path:
    """Copy the bundled dataset and its ``dataset_info.json`` entry into ``data_dir``."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    source = resources.files("losia_factory.resources").joinpath(DATASET_FILE)
    with resources.as_file(source) as path:
        shutil.copyfile(path, data_dir / DATASET_FILE)
    info_path = data_dir / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[DATASET_NAME] = {"file_name": DATASET_FILE}
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return data_dir


def build_tokenizer(corpus: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``corpus``, with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_llama(
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Save a randomly initialized LLaMA and its tokenizer (trained on the demo dataset) in HF format."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    corpus = [" ".join(r.values()) for r in demo_records()]
    corpus += [f"<|im_start|>user\n{r['instruction']} {r['input']}<|im_end|>" for r in demo_records()]
    tokenizer = build_tokenizer(corpus, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, max_new_tokens=32
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_assets(root: str | Path, **model_kwargs) -> dict[str, Path]:
    """``root/tiny-llama`` (model + tokenizer) and ``root/data`` (dataset + dataset_info.json)."""
    root = Path(root)
    model_dir = build_tiny_llama(root / "tiny-llama", **model_kwargs)
    data_dir = write_dataset(root / "data")
    return {"model": model_dir, "data": data_dir}
