"""The table of bad ``losia_*`` / ``pilora_*`` settings, each refused by LLaMA-Factory's parser before a model loads.

Every row adds its settings to a valid run of one method (:func:`base_run`) and lists fragments of the message that
must come back: together with the argument's name (checked for every row) they tell the user what to do. The table is
the test data of ``test_bad_inputs.py`` and the source of ``docs/errors.md`` (``make docs``), so a new argument needs
rows here before the suite passes.

Values are what a YAML file can carry (``.nan`` / ``.inf`` included). ``{work}`` in a value is replaced by the run's
working folder, which holds ``data/`` (the demo datasets, an empty JSON and an empty JSON Lines dataset) and
``ds_z2.json`` (a DeepSpeed ZeRO-2 config).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A model path that does not exist: a row that got as far as loading the model would fail with another message.
NO_MODEL = "/nonexistent/tiny-llama"
TYPE, RANGE, EMPTY, UNKNOWN, CONFLICT, DATA = "type", "range", "empty", "unknown name", "conflict", "data / output"


@dataclass(frozen=True)
class BadInput:
    """Bad settings added to a valid run of ``method``, and fragments of the message that refuses them."""

    method: str
    settings: dict[str, Any]
    kind: str
    says: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.method}-" + "-".join(f"{k}={v!r}" for k, v in self.settings.items())


def _rows(method: str, argument: str, *cases: tuple[str, Any, str]) -> list[BadInput]:
    return [BadInput(method, {argument: value}, kind, (says,)) for kind, value, says in cases]


NAN, INF = math.nan, math.inf

LOSIA_ROWS = [
    *_rows(
        "losia",
        "losia_rank_factor",
        (TYPE, "abc", "must be a number in (0, 1]"),
        (TYPE, True, "must be a number in (0, 1]"),
        (RANGE, 0.0, "must be a number in (0, 1]"),
        (RANGE, 1.5, "must be a number in (0, 1]"),
        (RANGE, -0.125, "must be a number in (0, 1]"),
        (RANGE, NAN, "must be a number in (0, 1]"),
        (EMPTY, None, "Give it a value (default: 0.125) or remove the line"),
    ),
    *_rows(
        "losia",
        "losia_time_slot",
        (TYPE, "10", "must be an integer >= 1"),
        (TYPE, 2.5, "must be an integer >= 1"),
        (TYPE, True, "must be an integer >= 1"),
        (RANGE, 0, "must be an integer >= 1"),
        (RANGE, -5, "must be an integer >= 1"),
        (EMPTY, None, "Give it a value (default: 100)"),
    ),
    *_rows(
        "losia",
        "losia_output_rank_factor",
        (TYPE, "half", "must be a number in [0, 1]"),
        (RANGE, -0.5, "must be a number in [0, 1] (0 leaves the output layer frozen)"),
        (RANGE, 1.5, "must be a number in [0, 1]"),
        (RANGE, INF, "must be a number in [0, 1]"),
    ),
    *_rows(
        "losia",
        "losia_importance",
        (UNKNOWN, "fisher", "must be one of ('sensitivity', 'gradient')"),
        (EMPTY, "", "must be one of ('sensitivity', 'gradient')"),
        (TYPE, 3, "must be one of ('sensitivity', 'gradient')"),
    ),
    *_rows(
        "losia",
        "losia_ema_beta1",
        (RANGE, 0.0, "must be a number in (0, 1)"),
        (RANGE, 1.0, "must be a number in (0, 1)"),
        (TYPE, "0.85", "must be a number in (0, 1)"),
        (EMPTY, None, "Give it a value (default: 0.85)"),
    ),
    *_rows(
        "losia",
        "losia_ema_beta2",
        (RANGE, 1.5, "must be a number in (0, 1)"),
        (RANGE, -0.2, "must be a number in (0, 1)"),
        (RANGE, NAN, "must be a number in (0, 1)"),
    ),
    *_rows(
        "losia",
        "losia_mode",
        (UNKNOWN, "random", "must be one of ('async', 'sync', 'once', 'fixed')"),
        (UNKNOWN, "ASYNC", "must be one of ('async', 'sync', 'once', 'fixed')"),
        (EMPTY, "", "must be one of"),
    ),
    *_rows(
        "losia",
        "losia_pro",
        (TYPE, "yes", "must be True or False"),
        (TYPE, 1, "must be True or False"),
        (EMPTY, None, "Give it a value (default: True)"),
    ),
    *_rows(
        "losia",
        "losia_target",
        (EMPTY, "", "must name at least one linear layer ('all', 'q_proj', 'self_attn.*')"),
        (EMPTY, " , ", "must name at least one linear layer"),
        (TYPE, 5, "must be comma-separated non-empty names (e.g. 'q_proj,v_proj')"),
        (TYPE, ["q_proj", ""], "must be comma-separated non-empty names"),
    ),
    *_rows(
        "losia",
        "losia_extra_modules",
        (TYPE, 7, "must be comma-separated non-empty names"),
        (TYPE, ["norm", 3], "must be comma-separated non-empty names"),
    ),
    *_rows(
        "losia",
        "losia_selection",
        (UNKNOWN, "top", "must be one of ('best', 'input_first', 'output_first')"),
        (EMPTY, "", "must be one of ('best', 'input_first', 'output_first')"),
    ),
    *_rows(
        "losia",
        "losia_importance_dtype",
        (UNKNOWN, "int8", "must be one of ('float32', 'bfloat16', 'float16')"),
        (UNKNOWN, "fp32", "must be one of ('float32', 'bfloat16', 'float16')"),
    ),
    *_rows(
        "losia",
        "losia_layers_path",
        (TYPE, 3, "must be a dotted module path such as 'model.layers', or empty"),
        (RANGE, "model..layers", "must be a dotted module path such as 'model.layers'"),
        (RANGE, "model/layers", "must be a dotted module path such as 'model.layers'"),
    ),
    *_rows(
        "losia",
        "losia_seed",
        (TYPE, "1", "must be an integer in [0, 2**63)"),
        (TYPE, 1.5, "must be an integer in [0, 2**63)"),
        (RANGE, -1, "must be an integer in [0, 2**63)"),
        (RANGE, 2**64, "must be an integer in [0, 2**63)"),
    ),
    *_rows(
        "losia",
        "losia_max_consecutive_nonfinite_steps",
        (RANGE, 0, "must be an integer >= 1"),
        (TYPE, 2.5, "must be an integer >= 1"),
        (TYPE, "ten", "must be an integer >= 1"),
    ),
    *_rows(
        "losia",
        "losia_rewarm",
        (TYPE, "no", "must be True or False"),
        (TYPE, 0, "must be True or False"),
    ),
    *_rows(
        "losia",
        "losia_adam_reset",
        (UNKNOWN, "all", "must be one of ('moments', 'state')"),
        (EMPTY, "", "must be one of ('moments', 'state')"),
    ),
    *_rows(
        "losia",
        "losia_output_order",
        (UNKNOWN, "middle", "must be one of ('first', 'last')"),
        (TYPE, 1, "must be one of ('first', 'last')"),
    ),
    BadInput(
        "losia", {"losia_rank": 0.5}, UNKNOWN, ("losia_rank is not a LoSiA argument: did you mean losia_rank_factor?",)
    ),
    BadInput("losia", {"losia_slot": 50}, UNKNOWN, ("did you mean losia_time_slot?",)),
    # Combinations with LLaMA-Factory's own settings (DeepSpeed configs and accelerate's FSDP: see test_arguments.py).
    BadInput("losia", {"fsdp": "full_shard auto_wrap"}, CONFLICT, ("FSDP version 1", "Set fsdp_config: {version: 2}")),
    BadInput(
        "losia",
        {"fsdp": "full_shard auto_wrap offload", "fsdp_config": {"version": 2}},
        CONFLICT,
        ("FSDP CPU offload is not supported", "Remove `offload` from `fsdp:`"),
    ),
    BadInput(
        "losia",
        {"fsdp": "full_shard auto_wrap", "fsdp_config": {"version": 2, "cpu_ram_efficient_loading": True}},
        CONFLICT,
        ("Set cpu_ram_efficient_loading: false in fsdp_config",),
    ),
    BadInput("losia", {"stage": "ppo", "reward_model": "x"}, CONFLICT, ("not supported", "Use one of pt, sft, rm")),
    BadInput(
        "losia", {"stage": "rm", "dataset": "demo_pairs"}, CONFLICT, ("no gradient: set losia_output_rank_factor: 0",)
    ),
    BadInput("losia", {"quantization_bit": 4}, CONFLICT, ("Remove quantization_bit",)),
    BadInput("losia", {"use_unsloth": True}, CONFLICT, ("Remove use_unsloth",)),
    BadInput("losia", {"optim": "adafactor"}, CONFLICT, ("would be ignored", "set adamw_torch")),
    BadInput("losia", {"use_galore": True}, CONFLICT, ("replaces the optimizer", "Remove use_galore")),
    BadInput("losia", {"use_llama_pro": True}, CONFLICT, ("Remove use_llama_pro",)),
    BadInput("losia", {"use_muon": True}, CONFLICT, ("replaces the optimizer", "Remove use_muon")),
    BadInput("losia", {"lora_rank": 16}, CONFLICT, ("does not apply with finetuning_type: losia: remove it",)),
    BadInput("losia", {"freeze_extra_modules": "norm"}, CONFLICT, ("set losia_extra_modules instead",)),
    BadInput(
        "losia",
        {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "steps", "eval_steps": 2, "val_size": 0.1},
        CONFLICT,
        ("lr_scheduler_type: reduce_lr_on_plateau is not supported",),
    ),
    BadInput("losia", {"pilora_rank": 8}, CONFLICT, ("only apply with `finetuning_type: pilora`", "remove them")),
    BadInput("lora", {"losia_rank_factor": 0.5}, CONFLICT, ("Set finetuning_type: losia or remove them",)),
    BadInput("losia", {"dataset": "demo_empty"}, DATA, ("has no rows", "Add examples to it or remove it")),
    BadInput("losia", {"dataset": "demo_empty_lines"}, DATA, ("has no rows",)),
    BadInput(
        "losia",
        {"output_dir": "{work}/data/demo_arithmetic.json/out"},
        DATA,
        ("is a file", "Choose another output_dir"),
    ),
]

PILORA_ROWS = [
    *_rows(
        "pilora",
        "pilora_rank",
        (RANGE, 0, "must be an integer >= 1"),
        (RANGE, -4, "must be an integer >= 1"),
        (TYPE, "8", "must be an integer >= 1"),
        (TYPE, 2.5, "must be an integer >= 1"),
        (TYPE, True, "must be an integer >= 1"),
        (EMPTY, None, "Give it a value (default: 32)"),
    ),
    *_rows(
        "pilora",
        "pilora_supplementary_rank",
        (RANGE, 0, "must be an integer >= 1"),
        (
            CONFLICT,
            64,
            "(64) must not exceed pilora_rank (32): it is the low-capacity adapter. Lower it or raise pilora_rank",
        ),
        (TYPE, "1", "must be an integer >= 1"),
    ),
    *_rows(
        "pilora",
        "pilora_alpha",
        (RANGE, 0, "must be a number > 0"),
        (RANGE, -16.0, "must be a number > 0"),
        (TYPE, "abc", "must be a number > 0"),
        (RANGE, INF, "must be a number > 0"),
    ),
    *_rows(
        "pilora",
        "pilora_dropout",
        (RANGE, 1.0, "must be a number in [0, 1)"),
        (RANGE, -0.1, "must be a number in [0, 1)"),
        (TYPE, "0.1", "must be a number in [0, 1)"),
    ),
    *_rows(
        "pilora",
        "pilora_interval",
        (RANGE, 0, "must be an integer >= 1"),
        (TYPE, 1.5, "must be an integer >= 1"),
        (TYPE, True, "must be an integer >= 1"),
    ),
    *_rows(
        "pilora",
        "pilora_probe_steps",
        (RANGE, -1, "must be an integer >= 0 (0: use pilora_probe_ratio)"),
        (TYPE, "10", "must be an integer >= 0"),
        (TYPE, 2.5, "must be an integer >= 0"),
        (CONFLICT, 8, "must be smaller than max_steps (8): stage 2 would never start"),
    ),
    *_rows(
        "pilora",
        "pilora_probe_ratio",
        (RANGE, 0, "must be a number in (0, 1)"),
        (RANGE, 1, "must be a number in (0, 1)"),
        (TYPE, "0.3", "must be a number in (0, 1)"),
        (RANGE, NAN, "must be a number in (0, 1)"),
    ),
    *_rows(
        "pilora",
        "pilora_partition",
        (UNKNOWN, "median", "must be one of consistent, top_half, cumulative"),
        (EMPTY, "", "must be one of consistent, top_half, cumulative"),
    ),
    *_rows(
        "pilora",
        "pilora_threshold",
        (RANGE, 0, "must be a number in (0, 1]"),
        (RANGE, 1.5, "must be a number in (0, 1]"),
        (TYPE, "0.7", "must be a number in (0, 1]"),
        (CONFLICT, 0.5, "Set pilora_partition: cumulative or remove pilora_threshold"),
    ),
    *_rows(
        "pilora",
        "pilora_init",
        (UNKNOWN, "zero", "must be one of fresh, carry"),
        (EMPTY, "", "must be one of fresh, carry"),
    ),
    *_rows(
        "pilora",
        "pilora_target",
        (EMPTY, "", "must name at least one linear layer (e.g. 'q_proj,v_proj'), or be 'all'"),
        (EMPTY, ",", "must name at least one linear layer"),
        (TYPE, 5, "must be comma-separated linear-layer names or 'all'"),
    ),
    *_rows(
        "pilora",
        "pilora_max_consecutive_nonfinite_steps",
        (RANGE, 0, "must be an integer >= 1"),
        (TYPE, 2.5, "must be an integer >= 1"),
    ),
    *_rows(
        "pilora",
        "pilora_seed",
        (RANGE, -1, "must be an integer >= 0"),
        (TYPE, "42", "must be an integer >= 0"),
        (TYPE, 1.5, "must be an integer >= 0"),
    ),
    BadInput("pilora", {"pilora_rnak": 8}, UNKNOWN, ("did you mean pilora_rank?",)),
    BadInput("pilora", {"stage": "dpo", "dataset": "demo_pairs"}, CONFLICT, ("Use one of pt, sft",)),
    BadInput("pilora", {"quantization_bit": 4}, CONFLICT, ("is not supported with finetuning_type: pilora",)),
    BadInput("pilora", {"use_unsloth": True}, CONFLICT, ("Remove use_unsloth",)),
    BadInput("pilora", {"adapter_name_or_path": "{work}/adapter"}, CONFLICT, ("Load a PiLoRA adapter with",)),
    BadInput("pilora", {"optim": "adafactor"}, CONFLICT, ("Use adamw_torch",)),
    BadInput(
        "pilora",
        {"use_galore": True},
        CONFLICT,
        ("cannot be combined with finetuning_type: pilora", "Remove use_galore"),
    ),
    BadInput("pilora", {"use_badam": True}, CONFLICT, ("Remove use_badam",)),
    BadInput("pilora", {"use_llama_pro": True}, CONFLICT, ("Remove use_llama_pro",)),
    BadInput(
        "pilora",
        {"lora_rank": 16},
        CONFLICT,
        ("does not apply with finetuning_type: pilora: set pilora_rank instead",),
    ),
    BadInput("pilora", {"lora_target": "q_proj"}, CONFLICT, ("set pilora_target instead",)),
    BadInput("pilora", {"use_dora": True}, CONFLICT, ("does not apply with finetuning_type: pilora: remove it",)),
    BadInput(
        "pilora",
        {"deepspeed": "{work}/ds_z2.json", "ddp_backend": "gloo"},
        CONFLICT,
        ("DeepSpeed and FSDP are not supported with finetuning_type: pilora", "Remove `deepspeed:`"),
    ),
    BadInput("pilora", {"losia_time_slot": 10}, CONFLICT, ("only apply with `finetuning_type: losia`",)),
    BadInput("pilora", {"dataset": "demo_empty"}, DATA, ("has no rows",)),
    BadInput("pilora", {"output_dir": "{work}/data/demo_arithmetic.json"}, DATA, ("is a file",)),
]

BAD_INPUTS: list[BadInput] = LOSIA_ROWS + PILORA_ROWS


def prepare_work(work: Path, data: Path) -> None:
    """Fill ``work`` with what rows refer to: a copy of ``data`` plus two empty datasets, and a ZeRO-2 config."""
    shutil.copytree(data, work / "data", dirs_exist_ok=True)
    (work / "data" / "empty.json").write_text("[]\n")
    (work / "data" / "empty.jsonl").write_text("\n")
    info = json.loads((work / "data" / "dataset_info.json").read_text())
    info["demo_empty"] = {"file_name": "empty.json"}
    info["demo_empty_lines"] = {"file_name": "empty.jsonl"}
    (work / "data" / "dataset_info.json").write_text(json.dumps(info, indent=2))
    from losia_factory.llamafactory.deepspeed_config import zero_config

    (work / "ds_z2.json").write_text(json.dumps(zero_config(2)))


def base_run(method: str, work: Path) -> dict[str, Any]:
    """A valid training run of ``method`` (``losia``, ``pilora`` or a stock one) that loads nothing when parsed."""
    config: dict[str, Any] = {
        "model_name_or_path": NO_MODEL,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": method,
        "dataset": "demo_arithmetic",
        "dataset_dir": str(work / "data"),
        "template": "chatml",
        "cutoff_len": 64,
        "output_dir": str(work / "out"),
        "overwrite_output_dir": True,
        "max_steps": 8,
        "report_to": "none",
        "bf16": False,
        "fp16": False,
    }
    return config


def run_settings(row: BadInput, work: Path) -> dict[str, Any]:
    """The settings of ``row`` on its base run, ``{work}`` filled in (copies: the parser fills in ``fsdp_config``)."""
    settings = {k: v.format(work=work) if isinstance(v, str) else copy.deepcopy(v) for k, v in row.settings.items()}
    return {**base_run(row.method, work), **settings}


def refusal(row: BadInput, work: Path) -> str:
    """The message LLaMA-Factory's parser (with losia-factory's hook) refuses ``row`` with.

    Raises:
        AssertionError: when the settings are accepted.
    """
    from llamafactory.hparams import get_train_args

    try:
        get_train_args(run_settings(row, work))
    except ValueError as err:
        return str(err)
    raise AssertionError(f"accepted: {row.settings}")


def errors_markdown(messages: list[tuple[BadInput, str]], work: Path) -> str:
    """docs/errors.md: every refused setting with the message, grouped by method, with the count."""
    count = len(messages)
    lines = [
        "# Refused settings",
        "",
        f"{count} bad settings of the `losia_*` and `pilora_*` arguments and their combinations with LLaMA-Factory's "
        "own, each refused by `llamafactory-cli train` while it parses the arguments, before the model loads, with "
        "the message shown. Generated by `make docs` from the table the test suite runs "
        "(`tests/llamafactory/bad_inputs.py`); `{work}` stands for the run's folder. The first line of a refusal "
        "that lists several problems reads `Unsupported settings for finetuning_type: <method>:`.",
        "",
        "Two problems need the model itself and are reported when it loads, before training starts: a model without "
        "a list of decoder layers (`Invalid losia_layers_path: No nn.ModuleList of blocks containing nn.Linear layers "
        "was found ...`; PiLoRA: `Invalid pilora_target: ... Use finetuning_type: lora for this model.`) and a target "
        "pattern that matches no linear layer (`Invalid losia_target: losia_target=[...] matches no nn.Linear inside "
        "the decoder layers ...; linear layers of model.layers.0 are [...]`, and the same for `pilora_target`).",
        "",
        "The empty-dataset check reads local JSON and JSON Lines files. A dataset in another format, or on the Hub, "
        "with "
        "no rows is left to LLaMA-Factory, which stops after loading the tokenizer, before the model, with datasets' "
        '`ValueError: Instruction "train" corresponds to no data!`.',
        "",
    ]
    for method in ("losia", "pilora"):
        rows = [(r, m) for r, m in messages if r.method == method or (method == "losia" and r.method == "lora")]
        lines += [f"## `finetuning_type: {method}` ({len(rows)})", "", "| Setting | Kind | Message |", "|---|---|---|"]
        for row, message in rows:
            setting = ", ".join(f"`{k}: {_yaml(v)}`" for k, v in row.settings.items())
            if row.method != method:
                setting += f" (with `finetuning_type: {row.method}`)"
            text = message.replace(str(work), "{work}").replace("|", "\\|").replace("\n", "<br>")
            lines.append(f"| {setting} | {row.kind} | {text} |")
        lines.append("")
    return "\n".join(lines)


def _yaml(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        import yaml

        # Quoted where YAML would read the bare text as something else ('10' is a string, 10 a number).
        try:
            plain = bool(value) and yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    return json.dumps(value)
