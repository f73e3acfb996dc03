"""LoSiA-Pro against the plain reference path on the real model: the same steps must give the same weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from .evaluate import END_OF_TURN, chat_prompt


def pro_plain_difference(
    model_dir: Path, train_file: Path, steps: int = 6, batch_size: int = 4, lr: float = 1e-3
) -> dict[str, float]:
    """Train LoSiA-Pro and plain LoSiA side by side for ``steps`` steps from the same model and batches.

    T = 1, so a group reselects after every step: with the output layer first, the tied lm_head/embedding block
    and the first decoder layers are relocated within the run. Returns the largest absolute difference of any
    weight and the largest change of any weight (for scale).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core import LosiaConfig, LosiaLRScheduler, attach_losia

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    records = json.loads(Path(train_file).read_text(encoding="utf-8"))[: steps * batch_size]
    batches = []
    for start in range(0, len(records), batch_size):
        rows = []
        for r in records[start : start + batch_size]:
            p = tokenizer(chat_prompt(r["instruction"]), add_special_tokens=False).input_ids
            a = tokenizer(r["output"] + END_OF_TURN, add_special_tokens=False).input_ids
            rows.append((p + a, [-100] * len(p) + a))
        width = max(len(ids) for ids, _ in rows)
        ids = torch.tensor([seq + [0] * (width - len(seq)) for seq, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq, _ in rows])
        batches.append((ids, labels, mask))

    trained = {}
    for pro in (True, False):
        model = copy.deepcopy(base)
        config = LosiaConfig(rank_factor=0.125, output_rank_factor=0.125, time_slot=1, pro=pro)
        optimizer = attach_losia(model, config, lr=lr)
        scheduler = LosiaLRScheduler(optimizer, num_training_steps=steps, warmup_steps=1, kind="constant")
        for ids, labels, mask in batches:
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        trained[pro] = {n: p.detach() for n, p in model.state_dict().items()}
    original = base.state_dict()
    difference = max(float((trained[True][n] - trained[False][n]).abs().max()) for n in original)
    moved = max(float((trained[True][n] - original[n]).abs().max()) for n in original)
    return {"max_difference": difference, "max_change": moved, "steps": steps}
