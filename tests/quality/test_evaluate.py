"""Scoring on a tiny random LLaMA, against HF generate and a one-item-at-a-time forward pass."""

import pytest
import torch

from losia_factory.quality.evaluate import (
    answer_nll,
    chat_prompt,
    generate,
    greedy_and_nll,
    load_for_eval,
    task_scores,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from losia_factory.demo import build_tiny_llama, demo_records

    folder = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_llama(folder, hidden_size=64, intermediate_size=128, num_layers=2, seed=3)
    model, tokenizer = load_for_eval(str(folder))
    items = [{"instruction": r["instruction"], "output": r["output"]} for r in demo_records()[:7]]
    return model, tokenizer, items


def one_by_one_nll(model, tokenizer, prompts, answers):
    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers):
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        a = tokenizer(answer + "<|im_end|>", add_special_tokens=False).input_ids
        logits = model(input_ids=torch.tensor([p + a])).logits[0, len(p) - 1 : -1]
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(a), reduction="sum"))
        count += len(a)
    return total / count


@torch.no_grad()
def test_shared_prefill_equals_generate_and_unpadded_nll(tiny):
    model, tokenizer, items = tiny
    prompts = [chat_prompt(i["instruction"]) for i in items]
    answers = [i["output"] for i in items]
    texts, nll = greedy_and_nll(model, tokenizer, prompts, answers, max_new_tokens=6, batch_size=3)
    assert texts == generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
    reference = one_by_one_nll(model, tokenizer, prompts, answers)
    assert nll == pytest.approx(reference, rel=1e-5)
    assert answer_nll(model, tokenizer, prompts, answers, batch_size=2) == pytest.approx(reference, rel=1e-5)


def test_task_scores_grade_the_first_integer(tiny, monkeypatch):
    model, tokenizer, _ = tiny
    items = [{"instruction": "a", "output": "12"}, {"instruction": "b", "output": "7"}]
    import losia_factory.quality.evaluate as evaluate

    monkeypatch.setattr(evaluate, "greedy_and_nll", lambda *a, **k: (["12 apples", "8"], 0.5))
    scores = task_scores(model, tokenizer, items)
    assert scores["accuracy"] == 50.0 and scores["answer_nll"] == 0.5
