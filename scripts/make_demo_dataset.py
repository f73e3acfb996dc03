"""Regenerate the bundled demo dataset (losia_factory/resources/demo_arithmetic.json), deterministically."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "piano",
    "lemon",
    "forest",
    "candle",
    "rocket",
    "garden",
    "silver",
    "window",
    "planet",
    "butter",
    "castle",
]


def examples(count: int = 480, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = i % 5
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        word = rng.choice(WORDS)
        if kind == 0:
            out.append({"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}."})
        elif kind == 1:
            hi, lo = max(a, b), min(a, b)
            out.append(
                {"instruction": f"What is {hi} minus {lo}?", "input": "", "output": f"{hi} minus {lo} is {hi - lo}."}
            )
        elif kind == 2:
            out.append(
                {"instruction": "Repeat the word three times.", "input": word, "output": f"{word} {word} {word}"}
            )
        elif kind == 3:
            out.append({"instruction": "Spell the word backwards.", "input": word, "output": word[::-1]})
        else:
            if a == b:
                b = (b + 1) % 100
            out.append(
                {"instruction": f"Which is larger, {a} or {b}?", "input": "", "output": f"{max(a, b)} is larger."}
            )
    return out


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "losia_factory" / "resources" / "demo_arithmetic.json"
    target.write_text(json.dumps(examples(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target}")
