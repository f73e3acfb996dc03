r"""Converters: one row of a training set, in its own schema -> one record in LLaMA-Factory's alpaca format.

The instruction sets keep their own texts: MetaMathQA ``query -> response``, Magicoder OSS-Instruct
``problem -> solution``, Alpaca-GPT4 and Commonsense170K ``instruction (+ input) -> output``.

The common-sense sets are converted to the very strings lm-evaluation-harness (0.4.13) scores for the task of the
same name. lm-eval evaluates these tasks by log-likelihood: for each choice it scores the continuation
``target_delimiter + choice`` (the delimiter is a single space for all eight tasks) after the context ``doc_to_text``.
So ``instruction`` is that context and ``output`` the correct choice's text without the leading space, and the
recipes train them with LLaMA-Factory's ``empty`` template: training and evaluation see the same prompt and answer.
Per task:

- ARC-Easy / ARC-Challenge: ``Question: <question>\nAnswer:`` -> the choice whose label is ``answerKey``.
- HellaSwag: ``<activity_label>: <ctx_a> <Ctx_b>`` -> the correct ending, both cleaned the way lm-eval's
  ``process_docs`` cleans them (WikiHow ``[title]`` markers become ``. ``, other ``[...]`` tags are dropped, double
  spaces collapsed); :func:`hellaswag_clean` is our own implementation of that rule.
- WinoGrande: lm-eval uses "partial evaluation": the contexts are the sentence up to the blank with each option filled
  in, and the continuation is the rest of the sentence after the blank (the same for both options). We train on the
  correct option's context -> the rest of the sentence.
- PIQA: ``Question: <goal>\nAnswer:`` -> the correct solution.
- OpenBookQA: ``<question_stem>`` -> the choice whose label is ``answerKey``.
- Social IQa: ``Q: <context> <question>\nA:`` -> the correct answer (labels are 1-based).
- BoolQ: ``<passage>\nQuestion: <question>?\nAnswer:`` -> ``yes`` or ``no``.

The tests check every conversion against lm-eval's own task definitions (the requests it builds for the same rows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Record = dict[str, str]
Doc = Mapping[str, Any]


# ---- converters: one row of the dataset, in its own schema -> one alpaca record ------------------------------------
def _record(instruction: str, output: str, input_: str = "") -> Record:
    return {"instruction": instruction, "input": input_, "output": output}


def _pick(options: list[str], index: int, what: str) -> str:
    if not 0 <= index < len(options):
        raise ValueError(f"{what} {index} does not index one of the {len(options)} options")
    return options[index]


def _labelled_choice(doc: Doc) -> str:
    """ARC / OpenBookQA: the text of the choice whose label is ``answerKey``."""
    labels = [str(label) for label in doc["choices"]["label"]]
    key = str(doc["answerKey"]).strip()
    if key not in labels:
        raise ValueError(f"answerKey {key!r} is not one of the labels {labels}")
    return doc["choices"]["text"][labels.index(key)]


def convert_metamathqa(doc: Doc) -> Record:
    """MetaMathQA: query -> response."""
    return _record(doc["query"], doc["response"])


def convert_magicoder(doc: Doc) -> Record:
    """Magicoder OSS-Instruct: problem -> solution."""
    return _record(doc["problem"], doc["solution"])


def convert_alpaca(doc: Doc) -> Record:
    """Alpaca-style rows (Alpaca-GPT4, Commonsense170K): instruction, input and output as they are."""
    return _record(doc["instruction"], doc["output"], doc.get("input") or "")


def convert_arc(doc: Doc) -> Record:
    r"""ARC: ``Question: <question>\nAnswer:`` -> the correct choice."""
    return _record(f"Question: {doc['question']}\nAnswer:", _labelled_choice(doc))


def hellaswag_clean(text: str) -> str:
    """HellaSwag's clean-up as lm-eval applies it: WikiHow ``[title]`` -> ``. ``, other ``[...]`` tags dropped."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def convert_hellaswag(doc: Doc) -> Record:
    """HellaSwag: activity label and both contexts (cleaned) -> the correct ending (cleaned)."""
    prompt = hellaswag_clean(f"{doc['activity_label']}: {doc['ctx_a']} {doc['ctx_b'].capitalize()}")
    return _record(prompt, hellaswag_clean(_pick(list(doc["endings"]), int(doc["label"]), "label")))


def convert_winogrande(doc: Doc) -> Record:
    """WinoGrande: the sentence up to the blank with the correct option -> the rest of the sentence."""
    sentence = doc["sentence"]
    blank = sentence.index("_")
    answer = str(doc["answer"]).strip()
    if answer not in ("1", "2"):
        raise ValueError(f"answer {answer!r} is neither '1' nor '2'")
    option = doc["option1"] if answer == "1" else doc["option2"]
    return _record(sentence[:blank] + option, sentence[blank + 1 :].strip())


def convert_piqa(doc: Doc) -> Record:
    r"""PIQA: ``Question: <goal>\nAnswer:`` -> the correct solution."""
    return _record(f"Question: {doc['goal']}\nAnswer:", _pick([doc["sol1"], doc["sol2"]], int(doc["label"]), "label"))


def convert_openbookqa(doc: Doc) -> Record:
    """OpenBookQA: the question stem -> the correct choice."""
    return _record(doc["question_stem"], _labelled_choice(doc))


def convert_social_iqa(doc: Doc) -> Record:
    r"""Social IQa: ``Q: <context> <question>\nA:`` -> the correct answer (labels are 1-based)."""
    answers = [doc["answerA"], doc["answerB"], doc["answerC"]]
    return _record(f"Q: {doc['context']} {doc['question']}\nA:", _pick(answers, int(doc["label"]) - 1, "label - 1"))


def convert_boolq(doc: Doc) -> Record:
    r"""BoolQ: ``<passage>\nQuestion: <question>?\nAnswer:`` -> ``yes`` / ``no``."""
    answer = _pick(["no", "yes"], int(doc["label"]), "label")
    return _record(f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", answer)
