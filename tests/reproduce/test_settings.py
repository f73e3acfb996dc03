"""The experiments carry the papers' hyper-parameters (values typed from the papers here, not from settings.py)."""

from __future__ import annotations

import itertools

import pytest

from losia_factory.reproduce.settings import TABLES, experiments, experiments_for

BY_NAME = {e.name: e for e in experiments()}
LORA_LAYERS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def args(name):
    return BY_NAME[name].args


@pytest.mark.parametrize(
    ("model", "data", "lr", "slot", "p_o"),
    [  # LoSiA paper Table 8
        ("gemma_2b", "metamathqa", 6e-5, 100, 1 / 64),
        ("gemma_2b", "magicoder", 5e-5, 150, 1 / 64),
        ("llama2_7b", "metamathqa", 6e-5, 100, 1 / 8),
        ("llama2_7b", "alpaca_gpt4", 5e-5, 150, 1 / 8),
        ("llama2_13b", "magicoder", 5e-5, 150, 1.0),
    ],
)
def test_table1_losia_follows_table8(model, data, lr, slot, p_o):
    a = args(f"{model}-{data}-losia")
    assert (a["learning_rate"], a["losia_time_slot"], a["losia_output_rank_factor"]) == (lr, slot, p_o)
    assert (a["losia_rank_factor"], a["losia_ema_beta1"], a["losia_ema_beta2"]) == (1 / 8, 0.85, 0.85)
    assert a["dataset"] == f"{data}_50k" and a["cutoff_len"] == 2048 and a["per_device_train_batch_size"] == 4
    assert (a["num_train_epochs"], a["warmup_ratio"], a["bf16"]) == (3.0, 0.1, True)
    assert a["gradient_accumulation_steps"] == 1


def test_table1_baselines_follow_table7():
    lora = args("llama2_7b-metamathqa-lora")
    assert (lora["lora_rank"], lora["lora_alpha"], lora["learning_rate"], lora["lora_target"]) == (
        64,
        128,
        2e-4,
        "all",
    )
    assert args("llama2_7b-metamathqa-dora")["use_dora"] and args("llama2_7b-metamathqa-dora")["learning_rate"] == 2e-4
    pissa = args("llama2_7b-metamathqa-pissa")
    assert pissa["pissa_init"] and pissa["learning_rate"] == 1e-4 and pissa["lora_rank"] == 64
    galore = args("llama2_7b-metamathqa-galore")
    assert (galore["galore_rank"], galore["galore_scale"], galore["galore_update_interval"]) == (512, 2.0, 200)
    assert galore["galore_target"] == LORA_LAYERS + ",lm_head" and galore["learning_rate"] == 1e-4
    assert args("llama2_13b-metamathqa-fft_8bit")["optim"] == "adamw_bnb_8bit"
    methods = {e.method for e in experiments_for("losia_t1") if e.model == "llama2_13b"}
    assert methods == {"fft_8bit", "lora", "pissa", "losia"}  # the paper's 13B rows
    assert len(experiments_for("losia_t1")) == (6 + 6 + 4) * 3


def test_table2_follows_tables_9_and_10():
    t2 = experiments_for("losia_t2")
    tasks = {"arc_challenge", "arc_easy", "hellaswag", "winogrande", "piqa", "openbookqa", "social_iqa", "boolq"}
    assert {e.train_sets[0][0] for e in t2} == tasks and all(e.train_sets[0][1] is None for e in t2)
    grid = {}
    for e in t2:
        a = e.args
        assert (a["cutoff_len"], a["per_device_train_batch_size"], a["num_train_epochs"]) == (256, 16, 3.0)
        grid.setdefault(e.method, set()).add(a["learning_rate"])
        if e.method == "losia":
            assert (a["losia_time_slot"], a["losia_output_rank_factor"], a["losia_rank_factor"]) == (50, 1.0, 1 / 8)
        if e.method == "galore":
            assert (a["galore_rank"], a["galore_update_interval"]) == (512, 200)
    assert grid == {
        "lora": {1e-4, 2e-4},
        "pissa": {5e-5, 1e-4},
        "dora": {1e-4, 2e-4},
        "galore": {1e-4, 2e-4},
        "losia": {5e-5, 2e-4},
    }


@pytest.mark.parametrize(
    ("variant", "change"),
    [
        ("sl", {"losia_mode": "sync"}),
        ("gl", {"losia_importance": "gradient"}),
        ("wds", {"losia_rewarm": False}),
        ("ffto", {"losia_output_rank_factor": 1.0}),
        ("relo", {"losia_mode": "once"}),
    ],
)
@pytest.mark.parametrize("data", ["metamathqa", "alpaca_gpt4"])
def test_each_ablation_changes_exactly_its_setting(variant, change, data):
    vanilla, ablated = args(f"llama2_7b-{data}-losia"), args(f"llama2_7b-{data}-losia-{variant}")
    differing = {k for k in vanilla.keys() | ablated.keys() if vanilla.get(k) != ablated.get(k)}
    assert differing == set(change) | {"output_dir"}
    assert {k: ablated[k] for k in change} == change


def test_table4_scales_and_slots():
    cells = {(c.row, c.column) for e in experiments_for("losia_t4") for c in e.cells if c.table == "losia_t4"}
    rows = ["LoRA"] + [f"T={t}" for t in (25, 50, 75, 100, 125, 150)]
    assert cells == {(r, f"at_{n}k") for r in rows for n in (30, 50, 70)}
    assert args("llama2_7b-metamathqa_70k-losia-t25")["losia_time_slot"] == 25
    assert args("llama2_7b-metamathqa_70k-losia-t25")["dataset"] == "metamathqa_70k"
    assert BY_NAME["llama2_7b-metamathqa_30k-lora"].train_sets == (("metamathqa", 30_000),)
    # T = 100 at 50K is Table 1's run, trained once
    assert any(c.table == "losia_t4" and c.row == "T=100" for c in BY_NAME["llama2_7b-metamathqa-losia"].cells)


def test_table11_rank_factors():
    assert args("gemma_2b-metamathqa-losia-p16")["losia_rank_factor"] == 1 / 16
    assert args("llama2_7b-metamathqa-losia-p2")["losia_rank_factor"] == 1 / 2
    assert args("gemma_2b-metamathqa-losia-p4")["losia_output_rank_factor"] == 1 / 64
    assert len(experiments_for("losia_t11")) == 8


def test_continual_learning_chain():
    """HellaSwag -> PIQA -> BoolQ -> SIQA -> WinoGrande, each stage from the previous output (LoRA merged first)."""
    for method, lr, tag in (("lora", 1e-4, "lr1e-4"), ("losia", 5e-5, "lr5e-5")):
        first = BY_NAME[f"llama2_7b-hellaswag-{method}-{tag}"]  # stage 1 is Table 2's single-task run
        chain = [first] + [
            BY_NAME[f"llama2_7b-continual-{method}-{i}_{t}"]
            for i, t in enumerate(("piqa", "boolq", "social_iqa", "winogrande"), start=2)
        ]
        for previous, stage in itertools.pairwise(chain):
            assert stage.after == previous.name and stage.args["learning_rate"] == lr
            expected = previous.output_dir + ("/merged" if method == "lora" else "")
            assert stage.args["model_name_or_path"] == expected
        for stage in chain:
            assert set(stage.eval_columns) >= {"hellaswag", "piqa", "boolq", "social_iqa", "winogrande"}
    names = [e.name for e in experiments_for("losia_t13")]
    assert all(names.index(e.after) < names.index(e.name) for e in experiments_for("losia_t13") if e.after)
    assert experiments_for("losia_t5") == experiments_for("losia_t13")


def pilora_table5(lr: float) -> dict:
    """PiLoRA paper, Table 5 (LLaMA-2 7B: lr 2e-4, LLaMA-3 8B: 1e-4)."""
    return {
        "pilora_rank": 32,
        "pilora_supplementary_rank": 2,
        "pilora_alpha": 64,
        "pilora_dropout": 0.05,
        "learning_rate": lr,
        "lr_scheduler_type": "linear",
        "per_device_train_batch_size": 16,
        "warmup_steps": 100,
        "num_train_epochs": 3.0,
        "pilora_target": "q_proj,k_proj,v_proj,up_proj,down_proj",
    }


@pytest.mark.parametrize(("model", "lr"), [("llama2_7b", 2e-4), ("llama3_8b", 1e-4)])
def test_pilora_table5(model, lr):
    a = args(f"{model}-commonsense170k-pilora")
    paper = pilora_table5(lr)
    assert {k: a[k] for k in paper} == paper and "warmup_ratio" not in a


def test_every_table_has_experiments_and_unknown_tables_are_refused():
    assert all(experiments_for(t) for t in TABLES)
    with pytest.raises(ValueError, match="losia_t1"):
        experiments_for("table_1")
