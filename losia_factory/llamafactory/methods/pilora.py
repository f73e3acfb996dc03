"""PiLoRA (``finetuning_type: pilora``) as LLaMA-Factory sees it: one description and its hooks.

A PiLoRA run trains LoRA adapters in two stages (one process or DDP) and saves a standard LoRA adapter, so it shares
LoRA's argument checks, and chat, export and evaluation load its output with ``finetuning_type: lora``. Its checkpoints
carry the stage, masks, hit counts and exact adapter values (``pilora_state.safetensors``), so it resumes exactly.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ...pilora import PiloraConfig, PiloraConfigError, attach_pilora, find_pilora_attachment
from ..arguments import argument_error, options
from ..checks import optim_name
from ..method import Method, UiGetter, WebUiGroup
from .labels import NONFINITE_LIMIT_LABELS

STAGES = ("pt", "sft")


def _check_arguments(finetuning_args: Any) -> None:
    """Refuse an argument that the other settings make meaningless (a value set but never read)."""
    config = finetuning_args.pilora_config
    default = next(o.default for o in options(PILORA) if o.field == "threshold")
    # isclose: a web UI slider can send the default back with a rounding error.
    if not math.isclose(config.threshold, default, abs_tol=1e-6) and config.partition != "cumulative":
        raise ValueError(
            f"pilora_threshold ({config.threshold}) only applies with pilora_partition: cumulative (got "
            f"pilora_partition: {config.partition}). Set pilora_partition: cumulative or remove pilora_threshold."
        )


def _refusals(model_args: Any, training_args: Any, finetuning_args: Any) -> list[str]:
    problems = []
    probe_steps = finetuning_args.pilora_config.probe_steps
    if training_args.max_steps > 0 and probe_steps >= training_args.max_steps:
        problems.append(
            f"pilora_probe_steps ({probe_steps}) must be smaller than max_steps ({training_args.max_steps}): stage 2 "
            "would never start. Lower pilora_probe_steps (or set 0 to use pilora_probe_ratio) or raise max_steps."
        )
    if training_args.deepspeed or getattr(training_args, "fsdp", None):
        problems.append(
            "DeepSpeed and FSDP are not supported with finetuning_type: pilora: the switch to stage 2 rewrites the "
            "adapter values in place, which ZeRO's fp32 partitions and FSDP's shards would not see. Remove "
            "`deepspeed:` / `fsdp:`; several GPUs run as DDP (FORCE_TORCHRUN=1)."
        )
    if model_args.quantization_bit is not None:
        problems.append(
            f"quantization_bit: {model_args.quantization_bit} is not supported with finetuning_type: pilora."
        )
    if getattr(model_args, "use_unsloth", False):
        problems.append("use_unsloth is not supported with finetuning_type: pilora. Remove use_unsloth.")
    if model_args.adapter_name_or_path:
        problems.append(
            "adapter_name_or_path cannot be trained further with finetuning_type: pilora. Load a PiLoRA adapter "
            "with finetuning_type: lora (it is a standard LoRA adapter)."
        )
    optim = optim_name(training_args)
    if not optim.startswith("adamw_torch"):
        problems.append(
            f"optim: {optim} is not tested with finetuning_type: pilora (its parameters change at stage 2). Use "
            "adamw_torch."
        )
    return problems


def _setup(model: Any, model_args: Any, finetuning_args: Any, is_trainable: bool) -> Any:
    """Wrap the target linear layers with stage-1 PiLoRA for training; refuse loading for inference.

    A PiLoRA run saves a standard LoRA adapter: chat, export and evaluation load it with ``finetuning_type: lora``
    and ``adapter_name_or_path``; loading with ``finetuning_type: pilora`` is refused with that advice.
    """
    from llamafactory.extras import logging

    if not is_trainable:
        raise ValueError(
            "A PiLoRA output is a standard LoRA adapter: load it with finetuning_type: lora and "
            "adapter_name_or_path: <the training output_dir>."
        )
    try:
        attachment = attach_pilora(model, finetuning_args.pilora_config)
    except PiloraConfigError as err:
        raise ValueError(argument_error(PILORA, err)) from None
    attachment.nonfinite.option = PILORA.argument_name("max_consecutive_nonfinite_steps")
    config = attachment.config
    logging.get_logger("llamafactory.pilora").info_rank0(
        f"Fine-tuning method: PiLoRA | r={config.rank}, r'={config.supplementary_rank}, alpha={config.alpha}, "
        f"K={config.interval}, partition={config.partition}, init={config.init} | {len(attachment.layers)} target "
        f"layers ({', '.join(sorted({n.rsplit('.', 1)[-1] for n in attachment.layers}))}) | stage-1 LoRA params "
        f"{attachment.num_trainable():,}"
    )
    return model


def _prepare_trainer(trainer: Any, num_training_steps: int, optimizer: Any) -> bool:
    """A PiLoRA model gets the callback that runs its two stages; the scheduler stays LLaMA-Factory's."""
    from ...hf.pilora_callback import PiloraCallback
    from ..trainer_hooks import add_callback_first

    if find_pilora_attachment(trainer.model) is not None:
        add_callback_first(trainer, PiloraCallback)
    return False


def _save_model(trainer: Any, output_dir: str) -> bool:
    """Save a PiLoRA model as the standard LoRA adapter it is equivalent to, not as wrapped full weights.

    A checkpoint folder also gets ``pilora_state.safetensors``, which :func:`_load_checkpoint` resumes from.
    """
    import torch

    attachment = find_pilora_attachment(trainer.model)
    if attachment is None:
        return False
    os.makedirs(output_dir, exist_ok=True)
    base = getattr(getattr(trainer.model, "config", None), "_name_or_path", None)
    if os.path.basename(os.path.normpath(output_dir)).startswith("checkpoint-"):
        attachment.save_training_state(output_dir)
    attachment.save_adapter(output_dir, base_model_name_or_path=base)
    if trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(output_dir)
    torch.save(trainer.args, os.path.join(output_dir, "training_args.bin"))
    return True


def _load_checkpoint(trainer: Any, folder: str) -> bool:
    """Resume a PiLoRA model from a checkpoint: stage, masks, hit counts and exact adapter values.

    Runs where the Trainer would load model weights (before DDP wraps the model), so a run resumed in stage 2 has
    its stage-2 layout before training starts; the optimizer state follows from the Trainer as usual.
    """
    attachment = find_pilora_attachment(trainer.model)
    if attachment is None:
        return False
    attachment.load_training_state(folder)
    return True


def _ui_refusal(get: UiGetter, stage: str, device_count: int) -> str:
    if stage not in STAGES:
        return "err_pilora_stage"
    if get("train.ds_stage") != "none":
        return "err_pilora_deepspeed"
    if get("top.quantization_bit") not in (None, "none", ""):
        return "err_pilora_quantization"
    if get("top.booster") == "unsloth":
        return "err_pilora_unsloth"
    return ""


_TITLE = {
    "en": "PiLoRA configurations",
    "ru": "Конфигурации PiLoRA",
    "zh": "PiLoRA 参数设置",
    "ko": "PiLoRA 구성",
    "ja": "PiLoRA 設定",
}
_NOTE = {
    "en": "PiLoRA trains a rank-r LoRA for a probe phase while scoring every output neuron, then gives the important neurons rank r and the others rank r'. It saves a standard LoRA adapter: load it with the lora fine-tuning method. One GPU or several (DDP), no DeepSpeed, no quantization.",
    "ru": "PiLoRA обучает LoRA ранга r на этапе зондирования и оценивает каждый выходной нейрон, затем даёт важным нейронам ранг r, а остальным ранг r'. Сохраняется обычный адаптер LoRA: загружайте его методом lora. Одна или несколько GPU (DDP), без DeepSpeed и квантования.",
    "zh": "PiLoRA 先在探测阶段训练秩为 r 的 LoRA 并为每个输出神经元打分，然后为重要神经元分配秩 r，其余分配秩 r'。结果保存为标准 LoRA 适配器：请用 lora 微调方法加载。支持单卡或多卡（DDP），不支持 DeepSpeed 和量化。",
    "ko": "PiLoRA는 탐색 단계에서 랭크 r LoRA를 학습하며 모든 출력 뉴런의 점수를 매기고, 중요한 뉴런에는 랭크 r, 나머지에는 랭크 r'을 할당합니다. 표준 LoRA 어댑터로 저장되므로 lora 방식으로 불러오세요. GPU 하나 또는 여러 개(DDP)에서 실행되며, DeepSpeed와 양자화는 사용할 수 없습니다.",
    "ja": "PiLoRA は探索フェーズでランク r の LoRA を学習しながら各出力ニューロンを評価し、重要なニューロンにランク r、それ以外にランク r' を割り当てます。標準の LoRA アダプターとして保存されるので、lora 手法で読み込んでください。GPU 1 枚または複数（DDP）で動作し、DeepSpeed と量子化は使用できません。",
}
# Config field -> {lang: {"label": ..., "info": ...}}: short labels and translations of the help.
_LABELS: dict[str, dict[str, dict[str, str]]] = {
    "max_consecutive_nonfinite_steps": NONFINITE_LIMIT_LABELS,
    "rank": {
        "en": {"label": "Rank r", "info": "Rank of the probe LoRA and of the important neurons' LoRA. Paper: 32."},
        "ru": {"label": "Ранг r", "info": "Ранг LoRA этапа зондирования и LoRA важных нейронов. В статье: 32."},
        "zh": {"label": "秩 r", "info": "探测阶段 LoRA 及重要神经元 LoRA 的秩。论文：32。"},
        "ko": {"label": "랭크 r", "info": "탐색 단계 LoRA와 중요 뉴런 LoRA의 랭크. 논문: 32."},
        "ja": {"label": "ランク r", "info": "探索フェーズの LoRA と重要ニューロンの LoRA のランク。論文: 32。"},
    },
    "supplementary_rank": {
        "en": {"label": "Rank r'", "info": "Rank of the LoRA on the other neurons (1 to r). Paper: 1 or 2."},
        "ru": {"label": "Ранг r'", "info": "Ранг LoRA остальных нейронов (от 1 до r). В статье: 1 или 2."},
        "zh": {"label": "秩 r'", "info": "其余神经元 LoRA 的秩（1 到 r）。论文：1 或 2。"},
        "ko": {"label": "랭크 r'", "info": "나머지 뉴런 LoRA의 랭크(1~r). 논문: 1 또는 2."},
        "ja": {"label": "ランク r'", "info": "その他のニューロンの LoRA のランク（1〜r）。論文: 1 または 2。"},
    },
    "alpha": {
        "en": {"label": "LoRA alpha", "info": "Both LoRAs are scaled by alpha / r. Paper: 64."},
        "ru": {"label": "LoRA alpha", "info": "Оба LoRA масштабируются на alpha / r. В статье: 64."},
        "zh": {"label": "LoRA alpha", "info": "两个 LoRA 的缩放系数均为 alpha / r。论文：64。"},
        "ko": {"label": "LoRA alpha", "info": "두 LoRA 모두 alpha / r로 스케일됩니다. 논문: 64."},
        "ja": {"label": "LoRA alpha", "info": "両方の LoRA を alpha / r でスケールします。論文: 64。"},
    },
    "dropout": {
        "en": {"label": "Dropout", "info": "Dropout on the adapters' input. Paper: 0.05."},
        "ru": {"label": "Dropout", "info": "Dropout на входе адаптеров. В статье: 0.05."},
        "zh": {"label": "Dropout", "info": "适配器输入的 dropout。论文：0.05。"},
        "ko": {"label": "드롭아웃", "info": "어댑터 입력에 적용하는 드롭아웃. 논문: 0.05."},
        "ja": {"label": "ドロップアウト", "info": "アダプター入力のドロップアウト。論文: 0.05。"},
    },
    "interval": {
        "en": {"label": "Scoring interval K", "info": "Score the neurons every K optimizer steps of the probe."},
        "ru": {
            "label": "Интервал оценки K",
            "info": "Оценивать нейроны каждые K шагов оптимизатора при зондировании.",
        },
        "zh": {"label": "打分间隔 K", "info": "探测阶段每 K 个优化步为神经元打分一次。"},
        "ko": {"label": "점수 간격 K", "info": "탐색 단계에서 옵티마이저 K 스텝마다 뉴런 점수를 매깁니다."},
        "ja": {"label": "評価間隔 K", "info": "探索フェーズで K オプティマイザステップごとにニューロンを評価します。"},
    },
    "probe_steps": {
        "en": {"label": "Probe steps", "info": "Length of the probe phase in steps; 0 uses the probe ratio."},
        "ru": {"label": "Шаги зондирования", "info": "Длина этапа зондирования в шагах; 0 — по доле."},
        "zh": {"label": "探测步数", "info": "探测阶段的步数；0 表示按探测比例计算。"},
        "ko": {"label": "탐색 스텝", "info": "탐색 단계 길이(스텝); 0이면 탐색 비율을 사용합니다."},
        "ja": {"label": "探索ステップ数", "info": "探索フェーズの長さ（ステップ）。0 なら探索比率を使います。"},
    },
    "probe_ratio": {
        "en": {"label": "Probe ratio", "info": "Probe phase as a share of the run. Paper: 1 epoch of 3."},
        "ru": {"label": "Доля зондирования", "info": "Этап зондирования как доля обучения. В статье: 1 эпоха из 3."},
        "zh": {"label": "探测比例", "info": "探测阶段占整个训练的比例。论文：3 个 epoch 中的 1 个。"},
        "ko": {"label": "탐색 비율", "info": "전체 학습 중 탐색 단계의 비율. 논문: 3 에폭 중 1 에폭."},
        "ja": {"label": "探索比率", "info": "学習全体に対する探索フェーズの割合。論文: 3 エポック中 1 エポック。"},
    },
    "partition": {
        "en": {"label": "Partition rule", "info": "consistent (paper), top_half or cumulative."},
        "ru": {"label": "Правило разбиения", "info": "consistent (статья), top_half или cumulative."},
        "zh": {"label": "划分规则", "info": "consistent（论文）、top_half 或 cumulative。"},
        "ko": {"label": "분할 규칙", "info": "consistent(논문), top_half 또는 cumulative."},
        "ja": {"label": "分割ルール", "info": "consistent（論文）、top_half、cumulative。"},
    },
    "threshold": {
        "en": {"label": "Importance share", "info": "Share held by the important neurons (cumulative rule)."},
        "ru": {"label": "Доля важности", "info": "Доля важности у важных нейронов (правило cumulative)."},
        "zh": {"label": "重要性占比", "info": "重要神经元所占的重要性比例（cumulative 规则）。"},
        "ko": {"label": "중요도 비율", "info": "중요 뉴런이 차지하는 중요도 비율(cumulative 규칙)."},
        "ja": {"label": "重要度の割合", "info": "重要ニューロンが占める重要度の割合（cumulative ルール）。"},
    },
    "init": {
        "en": {"label": "Stage-2 start", "info": "fresh LoRAs (paper) or carry the probe's update."},
        "ru": {"label": "Начало этапа 2", "info": "новые LoRA (статья) или перенос обновления зондирования."},
        "zh": {"label": "第二阶段初始化", "info": "全新 LoRA（论文）或沿用探测阶段的更新。"},
        "ko": {"label": "2단계 시작", "info": "새 LoRA(논문) 또는 탐색 단계 업데이트 유지."},
        "ja": {"label": "ステージ 2 の開始", "info": "新しい LoRA（論文）か探索フェーズの更新を引き継ぐか。"},
    },
    "target_modules": {
        "en": {"label": "Target modules", "info": "Linear layers to adapt, comma separated, or all."},
        "ru": {"label": "Целевые модули", "info": "Линейные слои через запятую или all."},
        "zh": {"label": "目标模块", "info": "要适配的线性层，逗号分隔，或 all。"},
        "ko": {"label": "대상 모듈", "info": "적용할 선형 계층(쉼표로 구분) 또는 all."},
        "ja": {"label": "対象モジュール", "info": "適応する線形層（カンマ区切り）または all。"},
    },
    "seed": {
        "en": {"label": "Adapter seed", "info": "Seed of the LoRA initializations."},
        "ru": {"label": "Сид адаптеров", "info": "Сид инициализации LoRA."},
        "zh": {"label": "适配器种子", "info": "LoRA 初始化的随机种子。"},
        "ko": {"label": "어댑터 시드", "info": "LoRA 초기화 시드."},
        "ja": {"label": "アダプターのシード", "info": "LoRA 初期化のシード。"},
    },
}
# Alert key -> {lang: message}, shown instead of starting a PiLoRA run it cannot do.
_ALERTS: dict[str, dict[str, str]] = {
    "err_pilora_deepspeed": {
        "en": "PiLoRA runs without DeepSpeed (several GPUs use DDP): set the DeepSpeed stage to none.",
        "ru": "PiLoRA работает без DeepSpeed (несколько GPU используют DDP): установите стадию DeepSpeed в none.",
        "zh": "PiLoRA 不使用 DeepSpeed（多卡时使用 DDP）：请将 DeepSpeed stage 设为 none。",
        "ko": "PiLoRA는 DeepSpeed 없이 실행됩니다(여러 GPU는 DDP 사용): DeepSpeed stage를 none으로 설정하세요.",
        "ja": "PiLoRA は DeepSpeed なしで動作します（複数 GPU では DDP）。DeepSpeed stage を none にしてください。",
    },
    "err_pilora_quantization": {
        "en": "PiLoRA does not support quantization: set the quantization bit to none.",
        "ru": "PiLoRA не поддерживает квантование: установите разрядность квантования в none.",
        "zh": "PiLoRA 不支持量化：请将量化等级设为 none。",
        "ko": "PiLoRA는 양자화를 지원하지 않습니다: 양자화 비트를 none으로 설정하세요.",
        "ja": "PiLoRA は量子化に対応していません。量子化ビットを none にしてください。",
    },
    "err_pilora_unsloth": {
        "en": "PiLoRA does not support the Unsloth booster: choose another booster.",
        "ru": "PiLoRA не поддерживает ускоритель Unsloth: выберите другой.",
        "zh": "PiLoRA 不支持 Unsloth 加速：请选择其他加速方式。",
        "ko": "PiLoRA는 Unsloth 가속을 지원하지 않습니다: 다른 가속 방식을 선택하세요.",
        "ja": "PiLoRA は Unsloth ブースターに対応していません。別のブースターを選んでください。",
    },
    "err_pilora_stage": {
        "en": "PiLoRA supports the pre-training and supervised fine-tuning stages only.",
        "ru": "PiLoRA поддерживает только стадии предобучения и supervised fine-tuning.",
        "zh": "PiLoRA 仅支持预训练和监督微调阶段。",
        "ko": "PiLoRA는 사전 학습과 지도 미세 조정 단계만 지원합니다.",
        "ja": "PiLoRA は事前学習と教師ありファインチューニングのステージのみ対応しています。",
    },
}


PILORA = Method(
    name="pilora",
    title="PiLoRA",
    summary="importance-aware LoRA ranks",
    config_class=PiloraConfig,
    runs_as="lora",
    stages=STAGES,
    renames={"target_modules": "target"},
    message_names_argument=True,
    check_arguments=_check_arguments,
    refusals=_refusals,
    setup=_setup,
    prepare_trainer=_prepare_trainer,
    save_model=_save_model,
    load_checkpoint=_load_checkpoint,
    checkpoint_files=("pilora_state.safetensors",),
    docs_intro="Set `finetuning_type: pilora` and any of these (see [pilora.md](pilora.md)).",
    ui=WebUiGroup(
        title=_TITLE,
        note=_NOTE,
        labels=_LABELS,
        sliders={
            "rank": (1, 256, 1),
            "supplementary_rank": (1, 16, 1),
            "alpha": (1, 512, 1),
            "dropout": (0.0, 0.5, 0.01),
            "interval": (1, 100, 1),
            "probe_ratio": (0.01, 0.99, 0.01),
            "threshold": (0.05, 1.0, 0.05),
        },
        rows=(
            ("rank", "supplementary_rank", "alpha", "dropout"),
            ("interval", "probe_steps", "probe_ratio", "partition"),
            ("threshold", "init", "target_modules", "seed"),
        ),
        alerts=_ALERTS,
        refusal=_ui_refusal,
    ),
)
