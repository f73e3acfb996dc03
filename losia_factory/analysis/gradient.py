"""Table 6 in small: how much of a probe batch's gradient mass a subnet holds, against random and ideal choices.

For every target weight, from the absolute full gradient ``|G|`` of one probe batch at the trained model:

* ``random``: the expected share of a random block of the run's block size, ``(k_out * k_in) / (out * in)``;
* ``localized``: the block LoSiA's greedy localization (:func:`~losia_factory.core.select_block`, the run's strategy)
  picks from ``|G|`` itself, the paper's "Subnet" column;
* ``final``: the run's last recorded subnet (chosen from importance collected during training);
* ``topk``: the ``k_out * k_in`` largest entries wherever they are (irregular; the ideal, an upper bound).

``topk >= localized >= random`` always holds: a block is one set of that many entries, and the greedy picks the
heaviest inputs then the heaviest outputs among them, each at least the average.

:func:`gradient_shares` is pure; :func:`probe_gradients` builds the model (this is the one figure that does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import select_block
from ..core.selection import top_indices
from .run import RunLog, Target, module_sort_key


def block_share(abs_grad: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor | None) -> float:
    """Share of ``abs_grad``'s total inside the block ``out_idx x in_idx`` (all inputs when ``in_idx`` is None)."""
    rows = abs_grad.index_select(0, out_idx)
    inside = rows if in_idx is None else rows.index_select(1, in_idx)
    return float(inside.sum() / abs_grad.sum())


def shares_for(abs_grad: torch.Tensor, target: Target, strategy: str) -> dict[str, float]:
    """The four shares of one target's gradient (see the module docstring) and its total mass."""
    abs_grad = abs_grad.double()
    in_f = abs_grad.shape[1]
    k_out, k_in = target.num_out, target.num_in
    final = target.periods[-1]
    final_in = None if final.in_idx is None else torch.from_numpy(final.in_idx)
    if k_in is None:
        localized = block_share(abs_grad, top_indices(abs_grad.sum(dim=1), k_out), None)
        size = k_out * in_f
    else:
        out_idx, in_idx = select_block(abs_grad, k_out, k_in, strategy)
        localized = block_share(abs_grad, out_idx, in_idx)
        size = k_out * k_in
    flat = abs_grad.reshape(-1)
    topk = float(torch.topk(flat, size).values.sum() / flat.sum())
    return {
        "total": float(flat.sum()),
        "random": size / flat.numel(),
        "localized": localized,
        "final": block_share(abs_grad, torch.from_numpy(final.out_idx), final_in),
        "topk": topk,
    }


def gradient_shares(run: RunLog, gradients: dict[str, torch.Tensor], strategy: str = "best") -> dict[str, Any]:
    """Table 6 data: per target the shares of :func:`shares_for`, and their means per module type.

    Args:
        run: The run (block sizes and last subnets).
        gradients: ``{target name: full weight gradient}`` (missing targets are skipped).
        strategy: The localization strategy of the run (``losia_selection``).
    """
    rows = {
        name: shares_for(gradients[name].abs(), target, strategy)
        for name, target in run.targets.items()
        if name in gradients
    }
    summary: dict[str, dict[str, float]] = {}
    modules = sorted({run.targets[n].module for n in rows}, key=module_sort_key)
    for module in modules:
        members = [row for n, row in rows.items() if run.targets[n].module == module]
        summary[module] = {
            key: float(np.mean([row[key] for row in members])) for key in ("random", "localized", "final", "topk")
        }
    return {"strategy": strategy, "targets": rows, "summary": summary}


def probe_texts(tokenizer: Any, path: str | os.PathLike[str] | None, samples: int) -> list[str]:
    """The probe batch as texts.

    ``samples`` records of ``path`` (alpaca JSON/JSONL, ``{"text"}`` lines, or plain text lines), or of the bundled
    demo dataset, rendered with the tokenizer's chat template when it has one.
    """
    records: list[Any]
    if path is None:
        from ..demo import demo_records

        records = list(demo_records())
    else:
        text = Path(path).read_text(encoding="utf-8")
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = json.loads(text)
        elif stripped.startswith("{"):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = [line for line in text.splitlines() if line.strip()]
    texts = []
    for record in records[:samples]:
        texts.append(_render(tokenizer, record))
    if not texts:
        raise ValueError(f"--probe {path}: no records found.")
    return texts


def _render(tokenizer: Any, record: Any) -> str:
    if isinstance(record, str):
        return record
    if "text" in record:
        return str(record["text"])
    prompt = "\n".join(str(record.get(k) or "") for k in ("instruction", "input")).strip()
    answer = str(record.get("output") or "")
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"{prompt}\n{answer}"


def probe_gradients(
    model_dir: str | os.PathLike[str], names: Iterable[str], texts: list[str], max_length: int = 128
) -> dict[str, torch.Tensor]:
    """Full weight gradients of ``names`` for the causal-LM loss of one batch of ``texts``.

    The model in ``model_dir`` runs in float32 on the CPU; every token is a label, padding aside.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train(False)
    wanted = {f"{name}.weight" for name in names}
    params = dict(model.named_parameters())
    missing = wanted - set(params)
    if missing:
        raise ValueError(f"the model in {model_dir} has no weight {sorted(missing)[0]} of the recorded subnets.")
    for name, param in params.items():
        param.requires_grad_(name in wanted)
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model(**batch, labels=labels).loss.backward()
    grads = {name.removesuffix(".weight"): params[name].grad for name in wanted}
    return {name: grad for name, grad in grads.items() if grad is not None}  # an unused layer gets no gradient
