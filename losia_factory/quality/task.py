"""The harness's task: seeded arithmetic word problems with a held-out split, and general prompts for forgetting.

Every item is generated from a seed, so the train and test files are the same on every machine. Test items share no
(template, numbers) combination with training items: the model must compute, not recall. Answers are integers and
are graded by the first integer of a greedy answer.
"""

from __future__ import annotations

import random
import re

NAMES = (
    "Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack", "Kira", "Leo", "Maya", "Noah",
    "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yuki", "Zoe",
)  # fmt: skip
THINGS = (
    "apples", "marbles", "stickers", "books", "coins", "pencils", "shells", "cards", "stamps", "cookies", "beads",
    "tickets", "plums", "rocks", "buttons",
)  # fmt: skip
INSTRUCTION = "Answer with the number only."


def _add(rng: random.Random) -> tuple[str, int, tuple[int, ...]]:
    a, b = rng.randint(10, 89), rng.randint(10, 89)
    return "{n} has {a} {t}. {n} gets {b} more {t}. How many {t} does {n} have now?", a + b, (a, b)


def _sub(rng: random.Random) -> tuple[str, int, tuple[int, ...]]:
    a = rng.randint(30, 99)
    b = rng.randint(5, a - 5)
    return "{n} has {a} {t} and gives {b} of them away. How many {t} are left?", a - b, (a, b)


def _add_sub(rng: random.Random) -> tuple[str, int, tuple[int, ...]]:
    a, b = rng.randint(10, 59), rng.randint(5, 39)
    c = rng.randint(2, a + b - 2)
    return "{n} had {a} {t}, found {b} more, then lost {c}. How many {t} does {n} have?", a + b - c, (a, b, c)


def _mul(rng: random.Random) -> tuple[str, int, tuple[int, ...]]:
    a, b = rng.randint(2, 9), rng.randint(3, 12)
    return "{n} fills {a} bags with {b} {t} each. How many {t} is that in total?", a * b, (a, b)


def _share(rng: random.Random) -> tuple[str, int, tuple[int, ...]]:
    a, q = rng.randint(2, 9), rng.randint(3, 12)
    return "{n} shares {a_times_q} {t} equally among {a} friends. How many {t} does each friend get?", q, (a, q)


KINDS = {"add": _add, "sub": _sub, "add_sub": _add_sub, "mul": _mul, "share": _share}


def make_problem(rng: random.Random) -> dict[str, str]:
    """One word problem in alpaca form (``instruction``, ``input``, ``output``) plus its ``kind`` and ``key``."""
    kind = rng.choice(tuple(KINDS))
    text, answer, numbers = KINDS[kind](rng)
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    values = dict(zip("abc", numbers))
    if kind == "share":
        values = {"a": numbers[0], "a_times_q": numbers[0] * numbers[1]}
    question = text.format(n=name, t=thing, **values)
    return {
        "instruction": f"{question} {INSTRUCTION}",
        "input": "",
        "output": str(answer),
        "kind": kind,
        "key": f"{kind}:{','.join(map(str, numbers))}",
    }


def make_splits(num_train: int, num_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``num_train`` training and ``num_test`` held-out problems; no held-out (kind, numbers) occurs in training."""
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}.")
    rng = random.Random(seed)
    test: list[dict] = []
    seen: set[str] = set()
    while len(test) < num_test:
        item = make_problem(rng)
        if item["key"] not in seen:
            seen.add(item["key"])
            test.append(item)
    train: list[dict] = []
    attempts = 0
    while len(train) < num_train:
        attempts += 1
        if attempts > 100 * num_train:
            raise ValueError(f"could not draw {num_train} training problems distinct from the held-out split")
        item = make_problem(rng)
        if item["key"] not in seen:
            train.append(item)
    return train, test


def parse_answer(text: str) -> int | None:
    """The first integer in a generated answer (``None`` when there is none)."""
    match = re.search(r"-?\d+", text.replace(",", ""))
    return int(match.group()) if match else None


# General instructions for the forgetting measure: the base model's own greedy answers to these are the reference
# text, and forgetting is how much less likely a fine-tuned model finds them (answer NLL after minus before).
GENERAL_PROMPTS = (
    "Explain what photosynthesis is in two sentences.",
    "Give three tips for staying focused while studying.",
    "Write a short poem about the sea.",
    "What is the capital of France, and what is it known for?",
    "Describe how to make a cup of tea.",
    "Why is the sky blue?",
    "List four common musical instruments.",
    "Write a polite email asking a colleague for a meeting next week.",
    "What are the benefits of regular exercise?",
    "Summarize the plot of a fairy tale you know.",
    "How do plants get water from the soil?",
    "Explain the difference between weather and climate.",
    "Suggest a name for a friendly robot and explain why.",
    "What should someone pack for a weekend camping trip?",
    "Describe a sunset to someone who has never seen one.",
    "Give a simple definition of a computer program.",
    "What is the water cycle?",
    "Write two sentences about why reading books is useful.",
    "How can a person save energy at home?",
    "Explain what a volcano is.",
    "Describe your ideal breakfast.",
    "What are some good habits for a healthy sleep?",
    "Tell me a fun fact about octopuses.",
    "How does a bicycle work?",
    "Write a short thank-you note to a teacher.",
    "What is the purpose of a library?",
    "Explain why we have seasons on Earth.",
    "Give three ideas for a birthday party.",
    "What makes a good friend?",
    "Describe the taste of a lemon.",
    "How do bees help flowers?",
    "Explain what recycling means and why it matters.",
    "Write a short story opening about a lost key.",
    "What is the difference between a frog and a toad?",
    "Suggest a healthy snack and say why it is healthy.",
    "Why do people learn foreign languages?",
    "Describe what a city park looks like in spring.",
    "What is gravity?",
    "Give advice to someone starting their first job.",
    "Explain how a rainbow forms.",
)
