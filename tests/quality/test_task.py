import pytest

from losia_factory.quality.task import GENERAL_PROMPTS, KINDS, make_problem, make_splits, parse_answer


def test_splits_are_seeded_sized_and_disjoint():
    train, test = make_splits(500, 300, seed=0)
    again_train, again_test = make_splits(500, 300, seed=0)
    assert train == again_train and test == again_test
    assert len(train) == 500 and len(test) == 300
    assert len({t["key"] for t in test}) == 300  # held-out problems are distinct
    assert not {t["key"] for t in train} & {t["key"] for t in test}
    assert {t["kind"] for t in test} == set(KINDS)
    assert make_splits(500, 300, seed=1)[1] != test


@pytest.mark.parametrize("seed", range(5))
def test_answers_are_what_the_question_asks(seed):
    import random

    rng = random.Random(seed)
    for _ in range(200):
        item = make_problem(rng)
        numbers = [int(n) for n in item["key"].split(":")[1].split(",")]
        expected = {
            "add": lambda a, b: a + b,
            "sub": lambda a, b: a - b,
            "add_sub": lambda a, b, c: a + b - c,
            "mul": lambda a, b: a * b,
            "share": lambda a, q: q,
        }[item["kind"]](*numbers)
        assert item["output"] == str(expected) and expected >= 0
        # Every number of the question is written in it (for "share", the total a*q).
        shown = [numbers[0] * numbers[1], numbers[0]] if item["kind"] == "share" else numbers
        assert all(str(n) in item["instruction"] for n in shown)


@pytest.mark.parametrize(
    "text,value",
    [("42", 42), (" 42<|im_end|>", 42), ("The answer is 1,234.", 1234), ("-7 apples", -7), ("none", None), ("", None)],
)
def test_parse_answer(text, value):
    assert parse_answer(text) == value


def test_general_prompts_are_distinct():
    assert len(set(GENERAL_PROMPTS)) == len(GENERAL_PROMPTS) >= 40
