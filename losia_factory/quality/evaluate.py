"""Scoring a trained model on the harness task: greedy exact match, answer NLL, and drift on general prompts.

Prompts are built exactly as LLaMA-Factory's ``smollm`` template builds them for training (user turn, then the
assistant header), and the answer is scored as the template's assistant turn (answer, ``<|im_end|>``), with prompt
and answer tokenized separately as LLaMA-Factory does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .task import parse_answer

END_OF_TURN = "<|im_end|>"


def chat_prompt(instruction: str) -> str:
    """The ``smollm`` template's prompt for one user turn (no system message)."""
    return f"<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"


def load_for_eval(model_dir: str, adapter_dir: str | None = None):
    """A float32 model in eval mode; a LoRA adapter, when given, is merged into it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.eval()
    return model, tokenizer


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), cut at the end of the assistant turn."""
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
    outputs = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts[start : start + batch_size]]
        width = max(map(len, encoded))
        ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, seq in enumerate(encoded):
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=end_id,
            pad_token_id=pad_id,
        )
        for row in generated[:, width:]:
            tokens = row.tolist()
            if end_id in tokens:
                tokens = tokens[: tokens.index(end_id)]
            outputs.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return outputs


@torch.no_grad()
def answer_nll(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 32) -> float:
    """Mean negative log-likelihood per answer token (nats) of ``answer + <|im_end|>`` after each prompt.

    Rows are left-padded so that every answer ends the row, and only the last positions' logits are computed
    (``logits_to_keep``): the output layer of a 49k vocabulary would otherwise dominate the cost.
    """
    total, count = 0.0, 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, answer in zip(prompts[start : start + batch_size], answers[start : start + batch_size]):
            p = tokenizer(prompt, add_special_tokens=False).input_ids
            a = tokenizer(answer + END_OF_TURN, add_special_tokens=False).input_ids
            rows.append((p, a))
        width = max(len(p) + len(a) for p, a in rows)
        keep = max(len(a) for _, a in rows) + 1
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), keep), -100, dtype=torch.long)
        for r, (p, a) in enumerate(rows):
            seq = p + a
            ids[r, width - len(seq) :] = torch.tensor(seq)
            mask[r, width - len(seq) :] = 1
            labels[r, keep - len(a) :] = torch.tensor(a)
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, :-1].float()
        target = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(losses)
        count += int((target != -100).sum())
    return total / max(1, count)


@torch.no_grad()
def greedy_and_nll(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], max_new_tokens: int = 8, batch_size: int = 50
) -> tuple[list[str], float]:
    """Greedy answers and the gold answers' NLL per token, from one shared forward pass over each prompt.

    The prompt's key/value cache serves twice: copied, it scores the gold answer (``answer + <|im_end|>``); as is,
    it continues greedily. Rows are left-padded, which leaves a rotary-position model's attention unchanged.
    """
    import copy

    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
    texts: list[str] = []
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts[start : start + batch_size]]
        gold = [
            tokenizer(a + END_OF_TURN, add_special_tokens=False).input_ids for a in answers[start : start + batch_size]
        ]
        rows, width = len(encoded), max(map(len, encoded))
        ids = torch.full((rows, width), pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for r, seq in enumerate(encoded):
            ids[r, width - len(seq) :] = torch.tensor(seq)
            mask[r, width - len(seq) :] = 1
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1].float()
        # Gold answers: the first token from the prompt's last position, the others from a pass over the answer.
        span = max(map(len, gold))
        gold_ids = torch.full((rows, span), pad_id, dtype=torch.long)
        gold_mask = torch.zeros((rows, span), dtype=torch.long)
        for r, seq in enumerate(gold):
            gold_ids[r, : len(seq)] = torch.tensor(seq)
            gold_mask[r, : len(seq)] = 1
        logits = first.unsqueeze(1)
        if span > 1:
            rest = model(
                input_ids=gold_ids[:, :-1],
                attention_mask=torch.cat([mask, gold_mask[:, :-1]], dim=1),
                past_key_values=copy.deepcopy(out.past_key_values),
                use_cache=True,
            ).logits.float()
            logits = torch.cat([logits, rest], dim=1)
        targets = gold_ids.masked_fill(gold_mask == 0, -100)
        total += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
        )
        count += int(gold_mask.sum())
        # Greedy continuation from the prompt's own cache.
        cache, step_mask = out.past_key_values, mask
        token = first.argmax(dim=-1)
        generated = [token]
        done = token == end_id
        for _ in range(max_new_tokens - 1):
            if bool(done.all()):
                break
            step_mask = torch.cat([step_mask, torch.ones((rows, 1), dtype=torch.long)], dim=1)
            step = model(input_ids=token.unsqueeze(1), attention_mask=step_mask, past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            token = step.logits[:, -1].argmax(dim=-1).masked_fill(done, end_id)
            generated.append(token)
            done = done | (token == end_id)
        for row in torch.stack(generated, dim=1).tolist():
            if end_id in row:
                row = row[: row.index(end_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts, total / max(1, count)


def task_scores(model, tokenizer, items: Sequence[dict], max_new_tokens: int = 8) -> dict[str, Any]:
    """``accuracy`` (percent, first integer of the greedy answer) and ``answer_nll`` on held-out items."""
    prompts = [chat_prompt(item["instruction"]) for item in items]
    outputs, nll = greedy_and_nll(model, tokenizer, prompts, [item["output"] for item in items], max_new_tokens)
    correct = sum(parse_answer(out) == int(item["output"]) for out, item in zip(outputs, items))
    return {"accuracy": 100.0 * correct / len(items), "answer_nll": nll, "samples": outputs[:5]}


def general_nll(model, tokenizer, reference: Sequence[dict]) -> float:
    """Answer NLL of the reference answers (the base model's own) to the general prompts."""
    nll = answer_nll(model, tokenizer, [chat_prompt(r["prompt"]) for r in reference], [r["answer"] for r in reference])
    if not math.isfinite(nll):
        raise ValueError("general-prompt NLL is not finite: the model diverged")
    return nll
