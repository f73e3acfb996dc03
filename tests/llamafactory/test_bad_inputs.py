"""Every bad losia_* / pilora_* setting of the table in bad_inputs.py is refused while the arguments are parsed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from losia_factory.llamafactory.arguments import options
from losia_factory.llamafactory.methods import LOSIA, PILORA, REGISTERED
from tests.llamafactory.bad_inputs import BAD_INPUTS, BadInput, errors_markdown, prepare_work, refusal
from tests.llamafactory.conftest import run_cli, train_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def work(assets, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_inputs")
    prepare_work(folder, assets["data"])
    return folder


@pytest.fixture(autouse=True)
def _no_model_loads(monkeypatch):
    """A row that reached a model load would fail here, not with its own message."""
    from transformers import PreTrainedModel

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded while parsing the arguments")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))


def test_table_covers_every_argument():
    named = {key for row in BAD_INPUTS for key in row.settings}
    missing = [o.name for m in REGISTERED for o in options(m) if o.name not in named]
    assert not missing, f"add rows for {missing} to tests/llamafactory/bad_inputs.py"


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[row.id for row in BAD_INPUTS])
def test_bad_input_is_refused_naming_the_argument_and_the_fix(row: BadInput, work):
    message = refusal(row, work)
    assert any(key in message for key in row.settings), f"the message names none of {list(row.settings)}: {message}"
    for fragment in row.says:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_stock_methods_do_not_get_our_refusals(work):
    """The output-dir and empty-dataset checks are losia-factory's: a stock run is left to LLaMA-Factory."""
    from llamafactory.hparams import get_train_args

    from tests.llamafactory.bad_inputs import base_run

    config = {**base_run("full", work), "dataset": "demo_empty", "output_dir": f"{work}/data/demo_arithmetic.json/o"}
    get_train_args(config)


def test_error_reference_is_up_to_date(work):
    messages = [(row, refusal(row, work)) for row in BAD_INPUTS]
    expected = errors_markdown(messages, work)
    assert f"{len(BAD_INPUTS)} bad settings" in expected
    assert (ROOT / "docs" / "errors.md").read_text() == expected, "run: make docs"


# -- problems only the model shows: reported when it loads, before training --------------------------------------


class NoLayerList(nn.Module):
    """A model whose linear layers are not in an nn.ModuleList (there is no list of decoder layers to find)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        self.lm_head = nn.Linear(8, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.body(x))


def _finetuning_args(method, **values):
    from losia_factory.llamafactory.arguments import build_config

    arguments = SimpleNamespace(**{o.name: values.get(o.name, o.default) for o in options(method)})
    return SimpleNamespace(**{method.config_attribute: build_config(method, arguments)}, pure_bf16=False)


def test_a_model_without_decoder_layers_is_refused_with_the_argument():
    with pytest.raises(ValueError, match=r"^Invalid losia_layers_path: No nn.ModuleList .* set losia_layers_path to"):
        LOSIA.setup(NoLayerList(), None, _finetuning_args(LOSIA), True)
    with pytest.raises(ValueError, match=r"^Invalid pilora_target: .* Use finetuning_type: lora for this model"):
        PILORA.setup(NoLayerList(), None, _finetuning_args(PILORA), True)


def test_model_paths_and_patterns_that_match_nothing_are_refused():
    from tests.toy_models import make_toy

    with pytest.raises(ValueError, match=r"^Invalid losia_layers_path: losia_layers_path='model.blocks' does not"):
        LOSIA.setup(make_toy(), None, _finetuning_args(LOSIA, losia_layers_path="model.blocks"), True)
    with pytest.raises(
        ValueError, match=r"^Invalid losia_target: losia_target=\['qkv'\] matches no nn.Linear.*q_proj"
    ):
        LOSIA.setup(make_toy(), None, _finetuning_args(LOSIA, losia_target="qkv"), True)
    with pytest.raises(
        ValueError, match=r"^Invalid pilora_target: pilora_target \['qkv'\] match no linear layer.*q_proj"
    ):
        PILORA.setup(make_toy(), None, _finetuning_args(PILORA, pilora_target="q_proj,qkv"), True)


@pytest.mark.slow
def test_llamafactory_cli_refuses_an_empty_dataset_before_loading_anything(assets, work):
    """One real launch: the refusal comes from the command users run, before the tokenizer or model loads."""
    result = run_cli(
        "train", train_config(assets, work / "cli_out", dataset="demo_empty", dataset_dir=str(work / "data")), work
    )
    assert result.returncode != 0
    assert f"dataset demo_empty ({work}/data/empty.json) has no rows" in result.stderr
    assert "corresponds to no data" not in result.stderr
    assert "tokenizer" not in (result.stdout + result.stderr).lower().replace("tokenizers_parallelism", "")
