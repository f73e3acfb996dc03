"""Every experiment of the LoSiA paper (Tables 1-5, 11, 13) and of the PiLoRA paper (Table 1), from one settings table.

The hyper-parameters come from the LoSiA paper's Tables 7, 8 and 10 and section A.3, and from the PiLoRA paper's
Table 5. Where a paper is silent the choice is ours and is marked ``# not in the paper`` below; docs/reproduce.md
lists them. :func:`experiments` expands the table into :class:`Experiment` objects: one LLaMA-Factory recipe each,
the training sets it needs, what to evaluate afterwards and which paper-table cells the results fill. An experiment
shared by several tables (the LLaMA-2 7B LoSiA MetaMathQA run is Table 1's row, Table 3's "LoSiA", Table 4's
"T=100 @50K" and Table 11's "p = 1/8") is trained once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------------------------
# The settings table
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A backbone: its Hugging Face id, the label the paper's tables use and LoSiA's p_o (Table 8)."""

    key: str
    hub_id: str
    label: str
    output_rank_factor: float


MODELS = {
    m.key: m
    for m in (
        Model("gemma_2b", "google/gemma-2b", "Gemma 2B", 1 / 64),
        Model("llama2_7b", "meta-llama/Llama-2-7b-hf", "LLaMA 2-7B", 1 / 8),
        Model("llama2_13b", "meta-llama/Llama-2-13b-hf", "LLaMA 2-13B", 1.0),
        Model("llama3_8b", "meta-llama/Meta-Llama-3-8B", "LLaMA3-8B", 1 / 8),  # PiLoRA only
    )
}


@dataclass(frozen=True)
class DomainSet:
    """A Table 1 training set (50K random samples), LoSiA's lr and T for it (Table 8) and what evaluates it."""

    key: str
    samples: int
    losia_lr: float
    losia_time_slot: int
    eval_columns: tuple[str, ...]


DOMAIN_SETS = {
    d.key: d
    for d in (
        DomainSet("metamathqa", 50_000, 6e-5, 100, ("gsm8k_5shot", "gsm8k_cot_0shot")),
        DomainSet("magicoder", 50_000, 5e-5, 150, ("mbpp_pass@1", "mbpp_pass@10")),
        DomainSet("alpaca_gpt4", 50_000, 5e-5, 150, ("mmlu_0shot_ppl", "mmlu_5shot_gen")),
    )
}

# The eight common-sense tasks of Table 2 (Table 9 train sets); the key is the training set, the evaluation column
# and the lm-eval task family at once.
COMMONSENSE = ("arc_challenge", "arc_easy", "hellaswag", "winogrande", "piqa", "openbookqa", "social_iqa", "boolq")
# Table 5 / 13: the continual-learning order (section A.3.4).
CONTINUAL_ORDER = ("hellaswag", "piqa", "boolq", "social_iqa", "winogrande")

# Shared by every run (Tables 7 and 10): AdamW, 3 epochs, warm-up ratio 0.1, bf16 backbone, one GPU.
COMMON = {
    "stage": "sft",
    "do_train": True,
    "num_train_epochs": 3.0,
    "warmup_ratio": 0.1,
    "lr_scheduler_type": "cosine",  # not in the paper: LLaMA-Factory's default
    "gradient_accumulation_steps": 1,
    "bf16": True,
    "seed": 42,
}
DOMAIN = {"cutoff_len": 2048, "per_device_train_batch_size": 4, "template": "alpaca"}  # Table 7
# Table 10. The `empty` template trains on exactly the text lm-eval scores (prompt, then the answer; see data.py).
COMMONSENSE_SETTINGS = {"cutoff_len": 256, "per_device_train_batch_size": 16, "template": "empty"}

LORA = {"finetuning_type": "lora", "lora_rank": 64, "lora_alpha": 128, "lora_target": "all"}  # Table 7
GALORE = {  # Table 7: rank 512, scale 2, T 200, "full projection", lm_head included, per-layer updates (A.4.1)
    "finetuning_type": "full",
    "use_galore": True,
    "galore_layerwise": True,
    "galore_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head",
    "galore_rank": 512,
    "galore_scale": 2.0,
    "galore_update_interval": 200,
    "galore_proj_type": "std",
}
LOSIA = {  # Tables 7, 8, 10: p = 1/8, beta1 = beta2 = 0.85, all linear layers, the output layer included
    "finetuning_type": "losia",
    "losia_rank_factor": 0.125,
    "losia_importance": "sensitivity",
    "losia_ema_beta1": 0.85,
    "losia_ema_beta2": 0.85,
    "losia_mode": "async",
    "losia_rewarm": True,
    "losia_pro": True,  # LoSiA-Pro: the same updates as LoSiA (tested), faster
    "losia_target": "all",
}

# Method -> (paper label, arguments, learning rate in Table 1 runs). Full fine-tuning's lr is not in the paper.
METHODS: dict[str, tuple[str, dict[str, Any], float | None]] = {
    "fft": ("FFT", {"finetuning_type": "full", "pure_bf16": True}, 1e-5),  # lr: not in the paper
    "fft_8bit": ("FFT-8Bit", {"finetuning_type": "full", "pure_bf16": True, "optim": "adamw_bnb_8bit"}, 1e-5),
    "lora": ("LoRA", LORA, 2e-4),
    "pissa": ("PiSSA", {**LORA, "pissa_init": True, "pissa_iter": 16, "pissa_convert": True}, 1e-4),
    "dora": ("DoRA", {**LORA, "use_dora": True}, 2e-4),
    "galore": ("GaLore", GALORE, 1e-4),
    "losia": ("LoSiA", LOSIA, None),  # per training set, Table 8
}
# Table 1's rows per model (LLaMA-2 13B: full fine-tuning with an 8-bit optimizer, no DoRA and GaLore rows).
TABLE1_METHODS = {
    "gemma_2b": ("fft", "lora", "pissa", "dora", "galore", "losia"),
    "llama2_7b": ("fft", "lora", "pissa", "dora", "galore", "losia"),
    "llama2_13b": ("fft_8bit", "lora", "pissa", "losia"),
}
# Table 10's learning-rate searches; Table 2 reports the better run of each pair.
TABLE2_LR_GRID = {
    "lora": (1e-4, 2e-4),
    "pissa": (5e-5, 1e-4),
    "dora": (1e-4, 2e-4),
    "galore": (1e-4, 2e-4),
    "losia": (5e-5, 2e-4),
}
CONTINUAL_LR = {"lora": 1e-4, "losia": 5e-5}  # section A.3.4
# Table 3 (LLaMA-2 7B; GSM8K after MetaMathQA, MMLU after Alpaca-GPT4): variant -> LoSiA arguments.
ABLATIONS = {
    "SL": {"losia_mode": "sync"},
    "GL": {"losia_importance": "gradient"},
    "WDS": {"losia_rewarm": False},
    "FFTO": {"losia_output_rank_factor": 1.0},  # the whole lm_head trained (p_o = 1)
    "ReLO": {"losia_mode": "once"},
}
TABLE4_SCALES = (30_000, 50_000, 70_000)
TABLE4_SLOTS = (25, 50, 75, 100, 125, 150)
TABLE11_FACTORS = {"p_1_16": 1 / 16, "p_1_8": 1 / 8, "p_1_4": 1 / 4, "p_1_2": 1 / 2}
# The PiLoRA paper's Table 5 (Commonsense170K; Q, K, V, Up, Down).
PILORA = {
    "finetuning_type": "pilora",
    "pilora_rank": 32,
    "pilora_supplementary_rank": 2,
    "pilora_alpha": 64,
    "pilora_dropout": 0.05,
    "pilora_interval": 1,  # not in the paper: score on every step of stage 1
    "pilora_probe_ratio": 1 / 3,  # stage 1 = the first of three epochs (A.4)
    "pilora_partition": "consistent",
    "pilora_init": "fresh",
    "pilora_target": "q_proj,k_proj,v_proj,up_proj,down_proj",
}
PILORA_RUNS = {"llama2_7b": 2e-4, "llama3_8b": 1e-4}

DATA_DIR = "data/paper"
SAVES_DIR = "saves/paper"

# --------------------------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One value of a paper table that an experiment's evaluation fills: ``table[row][column] = result[source]``."""

    table: str
    row: str
    column: str
    source: str


@dataclass
class Experiment:
    """One training run: its recipe, data, evaluation and the paper cells it fills.

    Attributes:
        name: File stem of the recipe and directory name of the output.
        table: The table whose folder holds the recipe (the first table that uses it).
        model: Key of :data:`MODELS`.
        method: Key of :data:`METHODS` (or ``"pilora"``).
        args: LLaMA-Factory arguments, in recipe order.
        train_sets: ``(data key, samples or None)`` to prepare; ``None`` means the whole train split.
        eval_columns: Metric columns to evaluate after training.
        cells: Paper-table cells the evaluation fills.
        after: Name of the experiment whose output this run starts from (continual learning), else None.
        title: First line of the recipe's header comment.
        notes: Further header comment lines.
    """

    name: str
    table: str
    model: str
    method: str
    args: dict[str, Any]
    train_sets: tuple[tuple[str, int | None], ...]
    eval_columns: tuple[str, ...]
    cells: list[Cell] = field(default_factory=list)
    after: str | None = None
    title: str = ""
    notes: tuple[str, ...] = ()

    @property
    def recipe_path(self) -> str:
        """Path of the recipe, relative to the repository root."""
        return f"recipes/paper/{self.table}/{self.name}.yaml"

    @property
    def output_dir(self) -> str:
        """Training output directory, relative to the working directory."""
        return self.args["output_dir"]

    @property
    def is_adapter(self) -> bool:
        """Whether the output is an adapter on the base model (LoRA, PiSSA, DoRA, PiLoRA) rather than a full model."""
        return self.args["finetuning_type"] in ("lora", "pilora")

    @property
    def adapter_dir(self) -> str | None:
        """The directory of the adapter to evaluate (PiSSA's converted adapter applies to the original weights)."""
        if not self.is_adapter:
            return None
        return f"{self.output_dir}/pissa_converted" if self.args.get("pissa_convert") else self.output_dir

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table this experiment contributes to (its cells, plus its own folder's table)."""
        seen = dict.fromkeys([self.table] + [c.table for c in self.cells])
        return tuple(seen)


def _lr_tag(lr: float) -> str:
    return f"lr{lr:.0e}".replace("e-0", "e-")


def _frac(p: float) -> str:
    return "1" if p == 1 else f"1/{round(1 / p)}"


def _experiment(
    *,
    table: str,
    name: str,
    model: str,
    method: str,
    method_args: dict[str, Any],
    task_settings: dict[str, Any],
    dataset: str,
    lr: float,
    train_sets: tuple[tuple[str, int | None], ...],
    eval_columns: tuple[str, ...],
    title: str,
    notes: tuple[str, ...] = (),
    model_path: str | None = None,
    after: str | None = None,
) -> Experiment:
    args: dict[str, Any] = {"model_name_or_path": model_path or MODELS[model].hub_id}
    args.update(stage=COMMON["stage"], do_train=COMMON["do_train"])
    args.update(method_args)
    args.update(dataset=dataset, dataset_dir=DATA_DIR, template=task_settings["template"])
    args.update(cutoff_len=task_settings["cutoff_len"], preprocessing_num_workers=16, dataloader_num_workers=4)
    args.update(
        output_dir=f"{SAVES_DIR}/{table}/{name}",
        logging_steps=10,
        save_steps=1000,
        save_total_limit=2,
        plot_loss=True,
        overwrite_output_dir=True,
        report_to="none",
        include_num_input_tokens_seen=True,  # latency per token (Table 1) from the trainer's counters
    )
    if method == "pilora":
        args["save_steps"] = 100_000  # PiLoRA checkpoints cannot be resumed; the final adapter is saved
        args.pop("save_total_limit")
    args.update(per_device_train_batch_size=task_settings["per_device_train_batch_size"])
    args.update(
        gradient_accumulation_steps=COMMON["gradient_accumulation_steps"],
        learning_rate=lr,
        num_train_epochs=COMMON["num_train_epochs"],
        lr_scheduler_type=COMMON["lr_scheduler_type"],
        warmup_ratio=COMMON["warmup_ratio"],
        bf16=COMMON["bf16"],
        seed=COMMON["seed"],
    )
    if args.pop("pure_bf16", False):
        args["bf16"] = False  # pure bf16 weights and optimizer states instead of AMP (fits 7B/13B in 80 GB)
        args["pure_bf16"] = True
    return Experiment(name, table, model, method, args, train_sets, eval_columns, [], after, title, notes)


def _losia_args(time_slot: int, output_rank_factor: float, **changes: Any) -> dict[str, Any]:
    """LoSiA's arguments with p, T and p_o next to each other in the recipe."""
    args = {"finetuning_type": "losia", "losia_rank_factor": LOSIA["losia_rank_factor"]}
    args.update(losia_time_slot=time_slot, losia_output_rank_factor=output_rank_factor)
    args.update((k, v) for k, v in LOSIA.items() if k not in args)
    args.update(changes)
    return args


def _sampled(key: str, samples: int) -> str:
    return f"{key}_{samples // 1000}k"


def _table1() -> list[Experiment]:
    out = []
    for model_key, methods in TABLE1_METHODS.items():
        model = MODELS[model_key]
        for data in DOMAIN_SETS.values():
            for method in methods:
                label, method_args, lr = METHODS[method]
                args = dict(method_args)
                if method == "losia":
                    args, lr = _losia_args(data.losia_time_slot, model.output_rank_factor), data.losia_lr
                name = f"{model_key}-{data.key}-{method}"
                exp = _experiment(
                    table="losia_t1",
                    name=name,
                    model=model_key,
                    method=method,
                    method_args=args,
                    task_settings=DOMAIN,
                    dataset=_sampled(data.key, data.samples),
                    lr=lr,
                    train_sets=((data.key, data.samples),),
                    eval_columns=data.eval_columns,
                    title=f"{label} on {model.label} with {data.key} (50K): LoSiA paper Table 1",
                )
                exp.cells.extend(Cell("losia_t1", f"{model.label} / {label}", c, c) for c in data.eval_columns)
                out.append(exp)
    return out


def _table2() -> list[Experiment]:
    out = []
    for task in COMMONSENSE:
        for method, lrs in TABLE2_LR_GRID.items():
            label, method_args, _ = METHODS[method]
            args = _losia_args(50, 1.0) if method == "losia" else dict(method_args)  # Table 10: T 50, p_o 1
            for lr in lrs:
                name = f"llama2_7b-{task}-{method}-{_lr_tag(lr)}"
                exp = _experiment(
                    table="losia_t2",
                    name=name,
                    model="llama2_7b",
                    method=method,
                    method_args=args,
                    task_settings=COMMONSENSE_SETTINGS,
                    dataset=task,
                    lr=lr,
                    train_sets=((task, None),),
                    eval_columns=(task,),
                    title=f"{label} on LLaMA 2-7B with {task} (lr {lr:g}): LoSiA paper Table 2",
                    notes=("Table 10 searches the learning rate; Table 2 reports the better of the pair.",),
                )
                exp.cells.append(Cell("losia_t2", label, task, task))
                out.append(exp)
    return out


def _continual(by_name: dict[str, Experiment]) -> list[Experiment]:
    """Table 13 (and 5): stage 1 is Table 2's run at the continual-learning lr, evaluated on all five tasks."""
    out = []
    for method, lr in CONTINUAL_LR.items():
        row = f"Seq-{METHODS[method][0]}"
        previous = None
        for stage, task in enumerate(CONTINUAL_ORDER, start=1):
            single = by_name[f"llama2_7b-{task}-{method}-{_lr_tag(lr)}"]
            single.cells.append(Cell("losia_t13", f"{row} / {task}", "st", task))
            if stage == 1:
                exp = single
                exp.eval_columns = tuple(dict.fromkeys(exp.eval_columns + CONTINUAL_ORDER))
            else:
                args = _losia_args(50, 1.0) if method == "losia" else dict(METHODS[method][1])
                # LoRA modules are merged into the backbone before the next task (A.3.4).
                start = f"{previous.output_dir}/merged" if previous.is_adapter else previous.output_dir
                exp = _experiment(
                    table="losia_t13",
                    name=f"llama2_7b-continual-{method}-{stage}_{task}",
                    model="llama2_7b",
                    method=method,
                    method_args=args,
                    task_settings=COMMONSENSE_SETTINGS,
                    dataset=task,
                    lr=lr,
                    train_sets=((task, None),),
                    eval_columns=CONTINUAL_ORDER,
                    title=f"{row} stage {stage} ({task}) on LLaMA 2-7B: LoSiA paper Tables 5 and 13",
                    notes=_start_notes(previous, stage),
                    model_path=start,
                    after=previous.name,
                )
                out.append(exp)
            exp.cells.extend(Cell("losia_t13", f"{row} / {t}", f"stage_{stage}", t) for t in CONTINUAL_ORDER)
            previous = exp
    return out


def _start_notes(previous: Experiment, stage: int) -> tuple[str, ...]:
    notes = (f"Starts from stage {stage - 1}'s output: train {previous.recipe_path} first.",)
    if previous.is_adapter:
        notes += (
            "Its LoRA is merged into the backbone before this task (section A.3.4):",
            f"  llamafactory-cli export --model_name_or_path {previous.args['model_name_or_path']} "
            f"--adapter_name_or_path {previous.output_dir} --finetuning_type lora "
            f"--template {previous.args['template']} --export_dir {previous.output_dir}/merged",
        )
    return (*notes, "scripts/reproduce.py losia_t13 runs the stages (and merges) in order.")


def _losia_math_variant(
    table: str, name: str, model_key: str, lr: float, samples: int, title: str, **losia: Any
) -> Experiment:
    args = _losia_args(DOMAIN_SETS["metamathqa"].losia_time_slot, MODELS[model_key].output_rank_factor, **losia)
    return _experiment(
        table=table,
        name=name,
        model=model_key,
        method="losia",
        method_args=args,
        task_settings=DOMAIN,
        dataset=_sampled("metamathqa", samples),
        lr=lr,
        train_sets=(("metamathqa", samples),),
        eval_columns=("gsm8k_5shot",),
        title=title,
    )


def _ablations(by_name: dict[str, Experiment]) -> list[Experiment]:
    """Table 3: GSM8K (5-shot) after MetaMathQA, MMLU (0-shot) after Alpaca-GPT4, LLaMA-2 7B."""
    out = []
    variants = (("metamathqa", "gsm8k", "gsm8k_5shot"), ("alpaca_gpt4", "mmlu", "mmlu_0shot_ppl"))
    for data_key, column, source in variants:
        data = DOMAIN_SETS[data_key]
        by_name[f"llama2_7b-{data_key}-losia"].cells.append(Cell("losia_t3", "LoSiA", column, source))
        for variant, change in ABLATIONS.items():
            base = by_name[f"llama2_7b-{data_key}-losia"]
            args = {**base.args, **change}
            exp = _experiment(
                table="losia_t3",
                name=f"llama2_7b-{data_key}-losia-{variant.lower()}",
                model="llama2_7b",
                method="losia",
                method_args={k: v for k, v in args.items() if k.startswith(("finetuning_type", "losia_"))},
                task_settings=DOMAIN,
                dataset=_sampled(data_key, data.samples),
                lr=data.losia_lr,
                train_sets=((data_key, data.samples),),
                eval_columns=(source,),
                title=f"LoSiA ablation {variant} on LLaMA 2-7B with {data_key} (50K): LoSiA paper Table 3",
            )
            exp.cells.append(Cell("losia_t3", variant, column, source))
            out.append(exp)
    return out


def _time_slots(by_name: dict[str, Experiment]) -> list[Experiment]:
    """Table 4: LoRA and LoSiA (T = 25..150) on 30K/50K/70K MetaMathQA samples, GSM8K 5-shot, LLaMA-2 7B."""
    out = []
    for samples in TABLE4_SCALES:
        column = f"at_{samples // 1000}k"
        if samples == 50_000:
            by_name["llama2_7b-metamathqa-lora"].cells.append(Cell("losia_t4", "LoRA", column, "gsm8k_5shot"))
        else:
            _, method_args, lr = METHODS["lora"]
            exp = _experiment(
                table="losia_t4",
                name=f"llama2_7b-metamathqa_{samples // 1000}k-lora",
                model="llama2_7b",
                method="lora",
                method_args=dict(method_args),
                task_settings=DOMAIN,
                dataset=_sampled("metamathqa", samples),
                lr=lr,
                train_sets=(("metamathqa", samples),),
                eval_columns=("gsm8k_5shot",),
                title=f"LoRA on LLaMA 2-7B with {samples // 1000}K MetaMathQA samples: LoSiA paper Table 4",
            )
            exp.cells.append(Cell("losia_t4", "LoRA", column, "gsm8k_5shot"))
            out.append(exp)
        for slot in TABLE4_SLOTS:
            row = f"T={slot}"
            if samples == 50_000 and slot == 100:
                by_name["llama2_7b-metamathqa-losia"].cells.append(Cell("losia_t4", row, column, "gsm8k_5shot"))
                continue
            exp = _losia_math_variant(
                "losia_t4",
                f"llama2_7b-metamathqa_{samples // 1000}k-losia-t{slot}",
                "llama2_7b",
                DOMAIN_SETS["metamathqa"].losia_lr,
                samples,
                f"LoSiA (T={slot}) on LLaMA 2-7B with {samples // 1000}K MetaMathQA samples: LoSiA paper Table 4",
                losia_time_slot=slot,
            )
            exp.cells.append(Cell("losia_t4", row, column, "gsm8k_5shot"))
            out.append(exp)
    return out


def _rank_factors(by_name: dict[str, Experiment]) -> list[Experiment]:
    """Table 11: p in 1/16..1/2 on MetaMathQA, GSM8K 5-shot, Gemma 2B and LLaMA-2 7B."""
    out = []
    for model_key, row in (("gemma_2b", "Gemma 2B"), ("llama2_7b", "LLaMA-2 7B")):
        for column, p in TABLE11_FACTORS.items():
            if p == 1 / 8:
                by_name[f"{model_key}-metamathqa-losia"].cells.append(Cell("losia_t11", row, column, "gsm8k_5shot"))
                continue
            exp = _losia_math_variant(
                "losia_t11",
                f"{model_key}-metamathqa-losia-p{round(1 / p)}",
                model_key,
                DOMAIN_SETS["metamathqa"].losia_lr,
                50_000,
                f"LoSiA (p={_frac(p)}) on {MODELS[model_key].label} with MetaMathQA (50K): LoSiA paper Table 11",
                losia_rank_factor=p,
            )
            exp.cells.append(Cell("losia_t11", row, column, "gsm8k_5shot"))
            out.append(exp)
    return out


def _pilora() -> list[Experiment]:
    out = []
    for model_key, lr in PILORA_RUNS.items():
        exp = _experiment(
            table="pilora_t1",
            name=f"{model_key}-commonsense170k-pilora",
            model=model_key,
            method="pilora",
            method_args=dict(PILORA),
            task_settings=COMMONSENSE_SETTINGS | {"template": "alpaca"},
            dataset="commonsense170k",
            lr=lr,
            train_sets=(("commonsense170k", None),),
            eval_columns=COMMONSENSE,
            title=f"PiLoRA on {MODELS[model_key].label} with Commonsense170K: PiLoRA paper Table 1 "
            "(settings: its Table 5)",
            notes=(
                "The output is a standard LoRA adapter of rank r + r' = 34: chat / export it with",
                "finetuning_type: lora and adapter_name_or_path: the output_dir below.",
            ),
        )
        # The PiLoRA paper's schedule: linear decay, 100 warm-up steps.
        exp.args["lr_scheduler_type"] = "linear"
        exp.args.pop("warmup_ratio")
        exp.args["warmup_steps"] = 100
        label = MODELS[model_key].label.replace("LLaMA 2-7B", "LLaMA2-7B")
        exp.cells.extend(Cell("pilora_t1", f"{label} / PiLoRA", task, task) for task in COMMONSENSE)
        out.append(exp)
    return out


# Tables computed from other tables' cells rather than filled by experiments.
DERIVED_TABLES = {"losia_t5": "losia_t13"}
TABLES = ("losia_t1", "losia_t2", "losia_t3", "losia_t4", "losia_t5", "losia_t11", "losia_t13", "pilora_t1")


def experiments() -> list[Experiment]:
    """Every experiment, in a runnable order (a continual-learning stage after the one it starts from)."""
    table1 = _table1()
    table2 = _table2()
    by_name = {e.name: e for e in table1 + table2}
    more = _continual(by_name) + _ablations(by_name) + _time_slots(by_name) + _rank_factors(by_name) + _pilora()
    every = table1 + table2 + more
    names = [e.name for e in every]
    if len(names) != len(set(names)):
        raise AssertionError("experiment names must be unique")
    return every


def experiments_for(table: str) -> list[Experiment]:
    """The experiments a table needs (for a derived table, those of the table it is computed from)."""
    if table not in TABLES:
        raise ValueError(f"Unknown table {table!r}; choose one of {', '.join(TABLES)}.")
    source = DERIVED_TABLES.get(table, table)
    return [e for e in experiments() if source in e.tables]
