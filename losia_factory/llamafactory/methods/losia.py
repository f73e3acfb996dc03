"""LoSiA / LoSiA-Pro (``finetuning_type: losia``) as LLaMA-Factory sees it: one description and its hooks.

A LoSiA run trains subnet blocks with its own AdamW and rewarm scheduler and saves a full model, so it shares full
fine-tuning's argument checks and loads like ``finetuning_type: full`` for chat, export and evaluation.
"""

from __future__ import annotations

from typing import Any

from ...core import LosiaConfig, LosiaConfigError, create_losia_optimizer, find_attachment, prepare_losia
from ...core.partitioned import gathered_state_dict, is_partitioned
from ..arguments import argument_error
from ..checks import optim_name
from ..deepspeed_config import deepspeed_problems, write_zero_config
from ..fsdp_config import fsdp_problems
from ..method import Method, UiGetter, WebUiGroup
from .labels import NONFINITE_LIMIT_LABELS

STAGES = ("pt", "sft", "rm", "dpo", "kto")


# -- parse-time rules ---------------------------------------------------------------------------------------------


def _check_arguments(finetuning_args: Any) -> None:
    if finetuning_args.stage == "rm" and finetuning_args.losia_config.output_rank_factor > 0:
        raise ValueError(
            "stage: rm scores with a value head, so the output layer (lm_head) gets no gradient: set "
            "losia_output_rank_factor: 0."
        )


def _refusals(model_args: Any, training_args: Any, finetuning_args: Any) -> list[str]:
    problems = []
    if training_args.deepspeed:
        problems += deepspeed_problems(training_args)
    problems += fsdp_problems(training_args)
    if model_args.quantization_bit is not None:
        problems.append(
            f"quantization_bit: {model_args.quantization_bit} cannot be used with finetuning_type: losia, which "
            "writes the trained subnets into the backbone weights. Remove quantization_bit (QLoRA needs "
            "finetuning_type: lora)."
        )
    if getattr(model_args, "use_unsloth", False):
        problems.append("use_unsloth is not supported with finetuning_type: losia. Remove use_unsloth.")
    if training_args.fp16:
        problems.append(
            "fp16: true (loss scaling) is not supported with finetuning_type: losia: scaled gradients would distort "
            "the importance scores and skipped steps would break the reselection schedule. Use bf16: true, or "
            "neither for float32."
        )
    optim = optim_name(training_args)
    if not optim.startswith("adamw"):
        problems.append(
            f"optim: {optim} would be ignored: finetuning_type: losia trains the subnets with its own AdamW. Remove "
            "optim or set adamw_torch."
        )
    scheduler_problem = _scheduler_problem(training_args)
    if scheduler_problem:
        problems.append(scheduler_problem)
    return problems


def _scheduler_problem(training_args: Any) -> str | None:
    from ...hf.scheduler import base_curve

    try:
        base_curve(training_args.lr_scheduler_type, 1, 10, training_args.lr_scheduler_kwargs)
    except ValueError as err:
        return f"{err}".replace("with LoSiA", "with finetuning_type: losia")
    except Exception:
        return None  # anything else is the scheduler's own business, reported when the Trainer builds it
    return None


# -- model, optimizer, trainer ------------------------------------------------------------------------------------


def _setup(model: Any, model_args: Any, finetuning_args: Any, is_trainable: bool) -> Any:
    """Attach LoSiA's subnet blocks for training; leave the model untouched for inference and export."""
    import torch

    if not is_trainable:
        return model  # a LoSiA output is a full model
    if getattr(model, "quantization_method", None) is not None:
        raise ValueError(
            "finetuning_type: losia cannot train a quantized model (it writes the trained subnets into the backbone "
            "weights). Load the model unquantized."
        )
    try:
        attachment = prepare_losia(model, finetuning_args.losia_config)
    except LosiaConfigError as err:
        raise ValueError(argument_error(LOSIA, err)) from None
    if not getattr(finetuning_args, "pure_bf16", False):
        for param in attachment.extra_params:
            param.data = param.data.to(
                torch.float32
            )  # fully trained extras get fp32 master weights, as in LLaMA-Factory
    _log_summary(attachment)
    return model


def _log_summary(attachment: Any) -> None:
    from llamafactory.extras import logging

    config, targets = attachment.config, attachment.targets
    blocks = sum(t.block.numel() for t in targets)
    extra = sum(p.numel() for p in attachment.extra_params)
    first = targets[0]
    # Under LLaMA-Factory's logger, so it prints like its own lines.
    logging.get_logger("llamafactory.losia").info_rank0(
        f"Fine-tuning method: LoSiA{'-Pro' if config.pro else ' (plain reference path)'} | p={config.rank_factor}, "
        f"T={config.time_slot}, p_o={config.output_rank_factor}, importance={config.importance}, mode={config.mode} | "
        f"{attachment.num_groups} groups ({attachment.layout.groups[0][0]} ... {attachment.layout.groups[-1][-1]}), "
        f"{len(targets)} target layers, e.g. {first.name} block {tuple(first.block.shape)} | subnet params "
        f"{blocks:,}, extra params {extra:,}"
    )


def _create_optimizer(model: Any, training_args: Any, finetuning_args: Any) -> Any:
    optimizer = create_losia_optimizer(
        model,
        lr=training_args.learning_rate,
        weight_decay=training_args.weight_decay,
        betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon,
    )
    optimizer.nonfinite.option = LOSIA.argument_name("max_consecutive_nonfinite_steps")  # named as the user sets it
    return optimizer


def _prepare_trainer(trainer: Any, num_training_steps: int, optimizer: Any) -> bool:
    """A LosiaAdamW gets the rewarming scheduler (LLaMA-Factory ignores custom ones) and the LoSiA callback."""
    from ...hf import LosiaCallback, build_losia_scheduler, unwrap_optimizer
    from ..trainer_hooks import add_callback_first

    losia_optimizer = unwrap_optimizer(trainer.optimizer if optimizer is None else optimizer)
    if trainer.lr_scheduler is not None or losia_optimizer is None:
        return False
    trainer.lr_scheduler = build_losia_scheduler(trainer.args, losia_optimizer, num_training_steps)
    if getattr(trainer, "is_fsdp_enabled", False):
        _save_full_state_dict(trainer.accelerator.state.fsdp_plugin)
    trainer._created_lr_scheduler = True
    add_callback_first(trainer, LosiaCallback)
    return True


def _gather_state_dict(trainer: Any) -> dict[str, Any] | None:
    """A LoSiA model under ZeRO-3, gathered for saving: base tensor names only, no block (see gathered_state_dict)."""
    model = trainer.model
    if find_attachment(model) is None or not any(is_partitioned(p) for p in model.parameters()):
        return None
    return gathered_state_dict(model, keep=trainer.args.should_save)


def _save_full_state_dict(plugin: Any) -> None:
    """FSDP saves whole models (base tensor names, loadable by transformers) for a LoSiA run.

    FSDP2 defaults to SHARDED_STATE_DICT, with which the Trainer's ``save_model`` writes no model at all; LoSiA's output
    is a full model, and the checkpoints follow the same setting (rank 0 gathers them).
    """
    if "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        from llamafactory.extras import logging

        logging.get_logger("llamafactory.losia").info_rank0(
            "FSDP state_dict_type set to FULL_STATE_DICT: a LoSiA run saves a full model."
        )
        # The configs of the sharded type would stay (accelerate fills in only missing ones).
        plugin.state_dict_config = plugin.optim_state_dict_config = None
        plugin.set_state_dict_type("FULL_STATE_DICT")


# -- web UI -------------------------------------------------------------------------------------------------------


def _ui_refusal(get: UiGetter, stage: str, device_count: int) -> str:
    if stage == "ppo":
        return "err_losia_stage"
    if get("train.compute_type") == "fp16":
        return "err_losia_fp16"
    if get("top.booster") == "unsloth":
        return "err_losia_unsloth"
    return ""


def _use_losia_zero_config(args: dict[str, Any], get: UiGetter) -> None:
    """Our ZeRO config in place of LLaMA-Factory's, whose round_robin_gradients (and offload's optimizer swap) break LoSiA."""
    if args.get("deepspeed"):
        from llamafactory.webui.common import DEFAULT_CACHE_DIR

        stage, offload = int(get("train.ds_stage")), bool(get("train.ds_offload"))
        args["deepspeed"] = write_zero_config(DEFAULT_CACHE_DIR, stage, offload)


_TITLE = {
    "en": "LoSiA configurations",
    "ru": "Конфигурации LoSiA",
    "zh": "LoSiA 参数设置",
    "ko": "LoSiA 구성",
    "ja": "LoSiA 設定",
}
_NOTE = {
    "en": "LoSiA trains one subnet of every linear layer and saves a full model. It runs on one GPU or several (DDP, DeepSpeed stage 2 or 3, with or without offload), unquantized, with bf16 or fp32 compute.",
    "ru": "LoSiA обучает одну подсеть каждого линейного слоя и сохраняет полную модель. Работает на одной или нескольких GPU (DDP, DeepSpeed stage 2 или 3, с выгрузкой или без), без квантования, с вычислениями в bf16 или fp32.",
    "zh": "LoSiA 训练每个线性层中的一个子网络并保存完整模型。支持单卡或多卡（DDP、DeepSpeed stage 2 或 3，可卸载），不量化，计算类型为 bf16 或 fp32。",
    "ko": "LoSiA는 각 선형 계층의 서브네트워크 하나를 학습하고 전체 모델을 저장합니다. GPU 하나 또는 여러 개(DDP, DeepSpeed stage 2 또는 3, 오프로드 포함)에서 양자화 없이 bf16 또는 fp32 연산으로 실행됩니다.",
    "ja": "LoSiA は各線形層のサブネットワークを 1 つ学習し、完全なモデルを保存します。1 枚または複数の GPU（DDP、DeepSpeed stage 2 または 3、オフロード可）で、量子化なし、bf16 または fp32 の計算型で動作します。",
}
# Config field -> {lang: {"label": ..., "info": ...}}: short labels and translations of the help.
_LABELS: dict[str, dict[str, dict[str, str]]] = {
    "max_consecutive_nonfinite_steps": NONFINITE_LIMIT_LABELS,
    "rank_factor": {
        "en": {"label": "Rank factor p", "info": "Each linear layer trains a (p·out) × (p·in) subnet. Paper: 1/8."},
        "ru": {
            "label": "Коэффициент ранга p",
            "info": "Каждый линейный слой обучает подсеть (p·out) × (p·in). В статье: 1/8.",
        },
        "zh": {"label": "秩因子 p", "info": "每个线性层训练 (p·out) × (p·in) 的子网络。论文取 1/8。"},
        "ko": {
            "label": "랭크 계수 p",
            "info": "각 선형 계층은 (p·out) × (p·in) 서브네트워크를 학습합니다. 논문: 1/8.",
        },
        "ja": {
            "label": "ランク係数 p",
            "info": "各線形層は (p·out) × (p·in) のサブネットワークを学習します。論文: 1/8。",
        },
    },
    "time_slot": {
        "en": {"label": "Time slot T", "info": "Steps a layer measures importance before it reselects its subnet."},
        "ru": {
            "label": "Временной слот T",
            "info": "Число шагов измерения важности слоя перед повторным выбором подсети.",
        },
        "zh": {"label": "时间槽 T", "info": "每层在重新选择子网络前计算重要性的步数。"},
        "ko": {"label": "타임 슬롯 T", "info": "계층이 서브네트워크를 다시 선택하기 전 중요도를 측정하는 스텝 수."},
        "ja": {"label": "タイムスロット T", "info": "層がサブネットワークを再選択する前に重要度を測るステップ数。"},
    },
    "output_rank_factor": {
        "en": {"label": "Output-layer factor p_o", "info": "Fraction of lm_head rows trained; 0 freezes lm_head."},
        "ru": {
            "label": "Коэффициент выходного слоя p_o",
            "info": "Доля обучаемых строк lm_head; 0 замораживает lm_head.",
        },
        "zh": {"label": "输出层因子 p_o", "info": "训练 lm_head 的行比例；0 表示冻结 lm_head。"},
        "ko": {"label": "출력 계층 계수 p_o", "info": "학습할 lm_head 행의 비율; 0이면 lm_head를 고정합니다."},
        "ja": {"label": "出力層係数 p_o", "info": "学習する lm_head の行の割合。0 で lm_head を固定します。"},
    },
    "importance": {
        "en": {"label": "Importance", "info": "sensitivity (paper) or gradient magnitude."},
        "ru": {"label": "Важность", "info": "sensitivity (как в статье) или модуль градиента."},
        "zh": {"label": "重要性", "info": "sensitivity（论文）或梯度幅值。"},
        "ko": {"label": "중요도", "info": "sensitivity(논문) 또는 그레디언트 크기."},
        "ja": {"label": "重要度", "info": "sensitivity（論文）または勾配の大きさ。"},
    },
    "mode": {
        "en": {"label": "Reselection mode", "info": "async (paper), sync, once or fixed subnets."},
        "ru": {"label": "Режим перевыбора", "info": "async (статья), sync, once или fixed."},
        "zh": {"label": "重选模式", "info": "async（论文）、sync、once 或 fixed。"},
        "ko": {"label": "재선택 모드", "info": "async(논문), sync, once 또는 fixed."},
        "ja": {"label": "再選択モード", "info": "async（論文）、sync、once、fixed。"},
    },
    "pro": {
        "en": {"label": "LoSiA-Pro", "info": "Faster, leaner backward with identical updates."},
        "ru": {"label": "LoSiA-Pro", "info": "Более быстрый и экономный обратный проход с теми же обновлениями."},
        "zh": {"label": "LoSiA-Pro", "info": "更快、更省显存的反向传播，更新完全相同。"},
        "ko": {"label": "LoSiA-Pro", "info": "동일한 업데이트로 더 빠르고 가벼운 역전파."},
        "ja": {"label": "LoSiA-Pro", "info": "同じ更新で、より速く省メモリな逆伝播。"},
    },
    "target_modules": {
        "en": {"label": "Target modules", "info": "Linear layers to train, comma separated; all for every one."},
        "ru": {"label": "Целевые модули", "info": "Обучаемые линейные слои через запятую; all — все."},
        "zh": {"label": "目标模块", "info": "要训练的线性层，逗号分隔；all 表示全部。"},
        "ko": {"label": "대상 모듈", "info": "학습할 선형 계층(쉼표로 구분); all은 전부."},
        "ja": {"label": "対象モジュール", "info": "学習する線形層（カンマ区切り）。all ですべて。"},
    },
    "extra_trainable": {
        "en": {"label": "Extra modules", "info": "Parameters trained fully, comma separated (e.g. norm)."},
        "ru": {
            "label": "Дополнительные модули",
            "info": "Полностью обучаемые параметры через запятую (например, norm).",
        },
        "zh": {"label": "额外模块", "info": "完全训练的参数，逗号分隔（例如 norm）。"},
        "ko": {"label": "추가 모듈", "info": "전체 학습할 파라미터(쉼표로 구분, 예: norm)."},
        "ja": {"label": "追加モジュール", "info": "完全に学習するパラメータ（カンマ区切り、例: norm）。"},
    },
    "selection": {
        "en": {"label": "Localization", "info": "best, input_first or output_first greedy search."},
        "ru": {"label": "Локализация", "info": "Жадный поиск best, input_first или output_first."},
        "zh": {"label": "定位策略", "info": "best、input_first 或 output_first 贪心搜索。"},
        "ko": {"label": "위치 탐색", "info": "best, input_first 또는 output_first 탐욕 탐색."},
        "ja": {"label": "局所化", "info": "best、input_first、output_first の貪欲探索。"},
    },
    "ema_beta1": {
        "en": {"label": "Importance EMA β1", "info": "Smoothing of the importance score."},
        "ru": {"label": "EMA важности β1", "info": "Сглаживание оценки важности."},
        "zh": {"label": "重要性 EMA β1", "info": "重要性分数的平滑系数。"},
        "ko": {"label": "중요도 EMA β1", "info": "중요도 점수의 평활 계수."},
        "ja": {"label": "重要度 EMA β1", "info": "重要度スコアの平滑化係数。"},
    },
    "ema_beta2": {
        "en": {"label": "Uncertainty EMA β2", "info": "Smoothing of the importance uncertainty."},
        "ru": {"label": "EMA неопределённости β2", "info": "Сглаживание неопределённости важности."},
        "zh": {"label": "不确定性 EMA β2", "info": "重要性不确定性的平滑系数。"},
        "ko": {"label": "불확실성 EMA β2", "info": "중요도 불확실성의 평활 계수."},
        "ja": {"label": "不確実性 EMA β2", "info": "重要度の不確実性の平滑化係数。"},
    },
    "importance_dtype": {
        "en": {"label": "Importance dtype", "info": "Precision of the importance buffers."},
        "ru": {"label": "Тип буферов важности", "info": "Точность буферов важности."},
        "zh": {"label": "重要性精度", "info": "重要性缓冲区的数据类型。"},
        "ko": {"label": "중요도 dtype", "info": "중요도 버퍼의 정밀도."},
        "ja": {"label": "重要度の dtype", "info": "重要度バッファの精度。"},
    },
    "layers_path": {
        "en": {"label": "Layers path", "info": "Decoder-layer list, e.g. model.layers; empty: automatic."},
        "ru": {
            "label": "Путь к слоям",
            "info": "Список слоёв декодера, например model.layers; пусто — автоматически.",
        },
        "zh": {"label": "层路径", "info": "解码器层列表，例如 model.layers；留空自动查找。"},
        "ko": {"label": "계층 경로", "info": "디코더 계층 목록(예: model.layers); 비우면 자동."},
        "ja": {"label": "層のパス", "info": "デコーダ層のリスト（例: model.layers）。空欄で自動。"},
    },
    "seed": {
        "en": {"label": "Subnet seed", "info": "Seed of the random initial subnets."},
        "ru": {"label": "Сид подсетей", "info": "Сид случайных начальных подсетей."},
        "zh": {"label": "子网络种子", "info": "随机初始子网络的种子。"},
        "ko": {"label": "서브네트워크 시드", "info": "무작위 초기 서브네트워크의 시드."},
        "ja": {"label": "サブネットのシード", "info": "ランダムな初期サブネットワークのシード。"},
    },
    "rewarm": {
        "en": {"label": "Rewarm", "info": "Ramp a layer's learning rate up again after it reselects (paper)."},
        "ru": {
            "label": "Повторный разогрев",
            "info": "Снова поднимать скорость обучения слоя после перевыбора (статья).",
        },
        "zh": {"label": "重新预热", "info": "层重选子网络后重新线性预热其学习率（论文）。"},
        "ko": {"label": "재워밍업", "info": "계층이 재선택한 뒤 학습률을 다시 올립니다(논문)."},
        "ja": {"label": "再ウォームアップ", "info": "層の再選択後に学習率を再び立ち上げます（論文）。"},
    },
    "adam_reset": {
        "en": {
            "label": "Adam reset",
            "info": "At reselection: zero the moments (keep the step) or drop the whole state.",
        },
        "ru": {
            "label": "Сброс Adam",
            "info": "При перевыборе: обнулить моменты (шаг сохранить) или сбросить всё состояние.",
        },
        "zh": {"label": "Adam 重置", "info": "重选时：清零一阶/二阶矩（保留步数）或丢弃全部状态。"},
        "ko": {"label": "Adam 초기화", "info": "재선택 시: 모멘트만 0으로(스텝 유지) 또는 상태 전체 삭제."},
        "ja": {
            "label": "Adam のリセット",
            "info": "再選択時: モーメントのみ 0 に（ステップ維持）、または状態をすべて破棄。",
        },
    },
    "output_order": {
        "en": {"label": "lm_head order", "info": "lm_head measures importance in the first or in the last time slot."},
        "ru": {"label": "Порядок lm_head", "info": "lm_head оценивает важность в первом или в последнем интервале."},
        "zh": {"label": "lm_head 顺序", "info": "lm_head 在第一个或最后一个时间槽计算重要性。"},
        "ko": {"label": "lm_head 순서", "info": "lm_head가 첫 번째 또는 마지막 타임 슬롯에서 중요도를 측정합니다."},
        "ja": {"label": "lm_head の順番", "info": "lm_head が最初または最後のタイムスロットで重要度を測ります。"},
    },
}
# Alert key -> {lang: message}, shown instead of starting a run LoSiA cannot do.
_ALERTS: dict[str, dict[str, str]] = {
    "err_losia_fp16": {
        "en": "LoSiA does not support fp16 (loss scaling): choose bf16 or fp32 as compute type.",
        "ru": "LoSiA не поддерживает fp16 (масштабирование потерь): выберите тип вычислений bf16 или fp32.",
        "zh": "LoSiA 不支持 fp16（损失缩放）：请将计算类型设为 bf16 或 fp32。",
        "ko": "LoSiA는 fp16(손실 스케일링)을 지원하지 않습니다: 연산 유형으로 bf16 또는 fp32를 선택하세요.",
        "ja": "LoSiA は fp16（損失スケーリング）に対応していません。計算型に bf16 か fp32 を選んでください。",
    },
    "err_losia_unsloth": {
        "en": "LoSiA does not support the Unsloth booster: choose another booster.",
        "ru": "LoSiA не поддерживает ускоритель Unsloth: выберите другой.",
        "zh": "LoSiA 不支持 Unsloth 加速：请选择其他加速方式。",
        "ko": "LoSiA는 Unsloth 가속을 지원하지 않습니다: 다른 가속 방식을 선택하세요.",
        "ja": "LoSiA は Unsloth ブースターに対応していません。別のブースターを選んでください。",
    },
    "err_losia_stage": {
        "en": "LoSiA does not support the PPO stage.",
        "ru": "LoSiA не поддерживает стадию PPO.",
        "zh": "LoSiA 不支持 PPO 阶段。",
        "ko": "LoSiA는 PPO 단계를 지원하지 않습니다.",
        "ja": "LoSiA は PPO ステージに対応していません。",
    },
}


LOSIA = Method(
    name="losia",
    title="LoSiA",
    summary="LoSiA / LoSiA-Pro subnet training",
    config_class=LosiaConfig,
    runs_as="full",
    stages=STAGES,
    stage_note=" (its trainer builds its own optimizer)",
    renames={"target_modules": "target", "extra_trainable": "extra_modules"},
    message_names_argument=True,
    check_arguments=_check_arguments,
    refusals=_refusals,
    setup=_setup,
    create_optimizer=_create_optimizer,
    prepare_trainer=_prepare_trainer,
    gather_state_dict=_gather_state_dict,
    checkpoint_files=("losia_config.json",),
    docs_intro="Set `finetuning_type: losia` and any of these in a LLaMA-Factory YAML (or `--name value` on the "
    "command line).",
    ui=WebUiGroup(
        title=_TITLE,
        note=_NOTE,
        allows_offload=True,
        labels=_LABELS,
        sliders={
            "rank_factor": (0.005, 1.0, 0.005),
            "time_slot": (1, 2000, 1),
            "output_rank_factor": (0.0, 1.0, 0.005),
            "ema_beta1": (0.01, 0.99, 0.01),
            "ema_beta2": (0.01, 0.99, 0.01),
        },
        rows=(
            ("rank_factor", "time_slot", "output_rank_factor", "pro", "rewarm"),
            ("importance", "mode", "selection", "target_modules", "extra_trainable"),
            ("ema_beta1", "ema_beta2", "importance_dtype", "layers_path", "seed", "adam_reset", "output_order"),
        ),
        alerts=_ALERTS,
        refusal=_ui_refusal,
        adjust_train_args=_use_losia_zero_config,
    ),
)
