"""PiLoRA in the LLaMA Board web UI: an accordion of ``pilora_*`` fields, its labels and the runs it refuses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from .pilora_arguments import SUPPORTED_STAGES, PiloraArguments

# Element name -> {lang: {"label": ..., "info": ...}} (LLaMA Board looks labels up by element name).
PILORA_LOCALES: dict[str, dict[str, dict[str, str]]] = {
    "pilora_tab": {
        "en": {"label": "PiLoRA configurations"},
        "ru": {"label": "Конфигурации PiLoRA"},
        "zh": {"label": "PiLoRA 参数设置"},
        "ko": {"label": "PiLoRA 구성"},
        "ja": {"label": "PiLoRA 設定"},
    },
    "pilora_note": {
        "en": {
            "value": "PiLoRA trains a rank-r LoRA for a probe phase while scoring every output neuron, then gives "
            "the important neurons rank r and the others rank r'. It saves a standard LoRA adapter: load it with "
            "the lora fine-tuning method. One GPU, no DeepSpeed, no quantization."
        },
        "ru": {
            "value": "PiLoRA обучает LoRA ранга r на этапе зондирования и оценивает каждый выходной нейрон, затем "
            "даёт важным нейронам ранг r, а остальным ранг r'. Сохраняется обычный адаптер LoRA: загружайте его "
            "методом lora. Одна GPU, без DeepSpeed и квантования."
        },
        "zh": {
            "value": "PiLoRA 先在探测阶段训练秩为 r 的 LoRA 并为每个输出神经元打分，然后为重要神经元分配秩 r，其余分配秩 r'。"
            "结果保存为标准 LoRA 适配器：请用 lora 微调方法加载。仅支持单卡，不支持 DeepSpeed 和量化。"
        },
        "ko": {
            "value": "PiLoRA는 탐색 단계에서 랭크 r LoRA를 학습하며 모든 출력 뉴런의 점수를 매기고, 중요한 뉴런에는 랭크 r, "
            "나머지에는 랭크 r'을 할당합니다. 표준 LoRA 어댑터로 저장되므로 lora 방식으로 불러오세요. GPU 하나, "
            "DeepSpeed와 양자화는 사용할 수 없습니다."
        },
        "ja": {
            "value": "PiLoRA は探索フェーズでランク r の LoRA を学習しながら各出力ニューロンを評価し、重要なニューロンにランク r、"
            "それ以外にランク r' を割り当てます。標準の LoRA アダプターとして保存されるので、lora 手法で読み込んでください。"
            "GPU 1 枚、DeepSpeed と量子化は使用できません。"
        },
    },
    "pilora_rank": {
        "en": {"label": "Rank r", "info": "Rank of the probe LoRA and of the important neurons' LoRA. Paper: 32."},
        "ru": {"label": "Ранг r", "info": "Ранг LoRA этапа зондирования и LoRA важных нейронов. В статье: 32."},
        "zh": {"label": "秩 r", "info": "探测阶段 LoRA 及重要神经元 LoRA 的秩。论文：32。"},
        "ko": {"label": "랭크 r", "info": "탐색 단계 LoRA와 중요 뉴런 LoRA의 랭크. 논문: 32."},
        "ja": {"label": "ランク r", "info": "探索フェーズの LoRA と重要ニューロンの LoRA のランク。論文: 32。"},
    },
    "pilora_supplementary_rank": {
        "en": {"label": "Rank r'", "info": "Rank of the LoRA on the other neurons (1 to r). Paper: 1 or 2."},
        "ru": {"label": "Ранг r'", "info": "Ранг LoRA остальных нейронов (от 1 до r). В статье: 1 или 2."},
        "zh": {"label": "秩 r'", "info": "其余神经元 LoRA 的秩（1 到 r）。论文：1 或 2。"},
        "ko": {"label": "랭크 r'", "info": "나머지 뉴런 LoRA의 랭크(1~r). 논문: 1 또는 2."},
        "ja": {"label": "ランク r'", "info": "その他のニューロンの LoRA のランク（1〜r）。論文: 1 または 2。"},
    },
    "pilora_alpha": {
        "en": {"label": "LoRA alpha", "info": "Both LoRAs are scaled by alpha / r. Paper: 64."},
        "ru": {"label": "LoRA alpha", "info": "Оба LoRA масштабируются на alpha / r. В статье: 64."},
        "zh": {"label": "LoRA alpha", "info": "两个 LoRA 的缩放系数均为 alpha / r。论文：64。"},
        "ko": {"label": "LoRA alpha", "info": "두 LoRA 모두 alpha / r로 스케일됩니다. 논문: 64."},
        "ja": {"label": "LoRA alpha", "info": "両方の LoRA を alpha / r でスケールします。論文: 64。"},
    },
    "pilora_dropout": {
        "en": {"label": "Dropout", "info": "Dropout on the adapters' input. Paper: 0.05."},
        "ru": {"label": "Dropout", "info": "Dropout на входе адаптеров. В статье: 0.05."},
        "zh": {"label": "Dropout", "info": "适配器输入的 dropout。论文：0.05。"},
        "ko": {"label": "드롭아웃", "info": "어댑터 입력에 적용하는 드롭아웃. 논문: 0.05."},
        "ja": {"label": "ドロップアウト", "info": "アダプター入力のドロップアウト。論文: 0.05。"},
    },
    "pilora_interval": {
        "en": {"label": "Scoring interval K", "info": "Score the neurons every K optimizer steps of the probe."},
        "ru": {
            "label": "Интервал оценки K",
            "info": "Оценивать нейроны каждые K шагов оптимизатора при зондировании.",
        },
        "zh": {"label": "打分间隔 K", "info": "探测阶段每 K 个优化步为神经元打分一次。"},
        "ko": {"label": "점수 간격 K", "info": "탐색 단계에서 옵티마이저 K 스텝마다 뉴런 점수를 매깁니다."},
        "ja": {"label": "評価間隔 K", "info": "探索フェーズで K オプティマイザステップごとにニューロンを評価します。"},
    },
    "pilora_probe_steps": {
        "en": {"label": "Probe steps", "info": "Length of the probe phase in steps; 0 uses the probe ratio."},
        "ru": {"label": "Шаги зондирования", "info": "Длина этапа зондирования в шагах; 0 — по доле."},
        "zh": {"label": "探测步数", "info": "探测阶段的步数；0 表示按探测比例计算。"},
        "ko": {"label": "탐색 스텝", "info": "탐색 단계 길이(스텝); 0이면 탐색 비율을 사용합니다."},
        "ja": {"label": "探索ステップ数", "info": "探索フェーズの長さ（ステップ）。0 なら探索比率を使います。"},
    },
    "pilora_probe_ratio": {
        "en": {"label": "Probe ratio", "info": "Probe phase as a share of the run. Paper: 1 epoch of 3."},
        "ru": {"label": "Доля зондирования", "info": "Этап зондирования как доля обучения. В статье: 1 эпоха из 3."},
        "zh": {"label": "探测比例", "info": "探测阶段占整个训练的比例。论文：3 个 epoch 中的 1 个。"},
        "ko": {"label": "탐색 비율", "info": "전체 학습 중 탐색 단계의 비율. 논문: 3 에폭 중 1 에폭."},
        "ja": {"label": "探索比率", "info": "学習全体に対する探索フェーズの割合。論文: 3 エポック中 1 エポック。"},
    },
    "pilora_partition": {
        "en": {"label": "Partition rule", "info": "consistent (paper), top_half or cumulative."},
        "ru": {"label": "Правило разбиения", "info": "consistent (статья), top_half или cumulative."},
        "zh": {"label": "划分规则", "info": "consistent（论文）、top_half 或 cumulative。"},
        "ko": {"label": "분할 규칙", "info": "consistent(논문), top_half 또는 cumulative."},
        "ja": {"label": "分割ルール", "info": "consistent（論文）、top_half、cumulative。"},
    },
    "pilora_threshold": {
        "en": {"label": "Importance share", "info": "Share held by the important neurons (cumulative rule)."},
        "ru": {"label": "Доля важности", "info": "Доля важности у важных нейронов (правило cumulative)."},
        "zh": {"label": "重要性占比", "info": "重要神经元所占的重要性比例（cumulative 规则）。"},
        "ko": {"label": "중요도 비율", "info": "중요 뉴런이 차지하는 중요도 비율(cumulative 규칙)."},
        "ja": {"label": "重要度の割合", "info": "重要ニューロンが占める重要度の割合（cumulative ルール）。"},
    },
    "pilora_init": {
        "en": {"label": "Stage-2 start", "info": "fresh LoRAs (paper) or carry the probe's update."},
        "ru": {"label": "Начало этапа 2", "info": "новые LoRA (статья) или перенос обновления зондирования."},
        "zh": {"label": "第二阶段初始化", "info": "全新 LoRA（论文）或沿用探测阶段的更新。"},
        "ko": {"label": "2단계 시작", "info": "새 LoRA(논문) 또는 탐색 단계 업데이트 유지."},
        "ja": {"label": "ステージ 2 の開始", "info": "新しい LoRA（論文）か探索フェーズの更新を引き継ぐか。"},
    },
    "pilora_target": {
        "en": {"label": "Target modules", "info": "Linear layers to adapt, comma separated, or all."},
        "ru": {"label": "Целевые модули", "info": "Линейные слои через запятую или all."},
        "zh": {"label": "目标模块", "info": "要适配的线性层，逗号分隔，或 all。"},
        "ko": {"label": "대상 모듈", "info": "적용할 선형 계층(쉼표로 구분) 또는 all."},
        "ja": {"label": "対象モジュール", "info": "適応する線形層（カンマ区切り）または all。"},
    },
    "pilora_seed": {
        "en": {"label": "Adapter seed", "info": "Seed of the LoRA initializations."},
        "ru": {"label": "Сид адаптеров", "info": "Сид инициализации LoRA."},
        "zh": {"label": "适配器种子", "info": "LoRA 初始化的随机种子。"},
        "ko": {"label": "어댑터 시드", "info": "LoRA 초기화 시드."},
        "ja": {"label": "アダプターのシード", "info": "LoRA 初期化のシード。"},
    },
}

# Alert key -> {lang: message}, shown instead of starting a PiLoRA run it cannot do.
PILORA_ALERTS: dict[str, dict[str, str]] = {
    "err_pilora_deepspeed": {
        "en": "PiLoRA runs on one device without DeepSpeed: set the DeepSpeed stage to none.",
        "ru": "PiLoRA работает на одном устройстве без DeepSpeed: установите стадию DeepSpeed в none.",
        "zh": "PiLoRA 只在单设备上运行且不使用 DeepSpeed：请将 DeepSpeed stage 设为 none。",
        "ko": "PiLoRA는 DeepSpeed 없이 단일 장치에서 실행됩니다: DeepSpeed stage를 none으로 설정하세요.",
        "ja": "PiLoRA は DeepSpeed なしの 1 デバイスで動作します。DeepSpeed stage を none にしてください。",
    },
    "err_pilora_devices": {
        "en": "PiLoRA trains on one device: start the web UI with CUDA_VISIBLE_DEVICES set to one GPU.",
        "ru": "PiLoRA обучается на одном устройстве: запустите веб-интерфейс с CUDA_VISIBLE_DEVICES на одну GPU.",
        "zh": "PiLoRA 只支持单设备训练：请设置 CUDA_VISIBLE_DEVICES 为一张 GPU 后再启动 Web UI。",
        "ko": "PiLoRA는 단일 장치에서 학습합니다: CUDA_VISIBLE_DEVICES를 GPU 하나로 설정하고 웹 UI를 시작하세요.",
        "ja": "PiLoRA は 1 デバイスで学習します。CUDA_VISIBLE_DEVICES を 1 枚の GPU にして Web UI を起動してください。",
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

# Every pilora_* argument has an element of the same name in the Train tab.
PILORA_INPUT_NAMES = tuple(f.name for f in fields(PiloraArguments))
INTEGER_FIELDS = ("pilora_rank", "pilora_supplementary_rank", "pilora_interval", "pilora_probe_steps", "pilora_seed")
FLOAT_FIELDS = ("pilora_alpha", "pilora_dropout", "pilora_probe_ratio", "pilora_threshold")


def create_pilora_accordion() -> dict[str, Any]:
    """The PiLoRA accordion of the Train tab (hidden until ``pilora`` is the fine-tuning method)."""
    import gradio as gr

    d = PiloraArguments()
    with gr.Accordion(open=True, visible=False, elem_id="pilora_tab") as pilora_tab:
        pilora_note = gr.Markdown()
        with gr.Row():
            rank = gr.Slider(1, 256, value=d.pilora_rank, step=1, elem_id="pilora_rank")
            sup = gr.Slider(1, 16, value=d.pilora_supplementary_rank, step=1, elem_id="pilora_supplementary_rank")
            alpha = gr.Slider(1, 512, value=d.pilora_alpha, step=1, elem_id="pilora_alpha")
            dropout = gr.Slider(0.0, 0.5, value=d.pilora_dropout, step=0.01, elem_id="pilora_dropout")
        with gr.Row():
            interval = gr.Slider(1, 100, value=d.pilora_interval, step=1, elem_id="pilora_interval")
            probe_steps = gr.Number(value=d.pilora_probe_steps, precision=0, elem_id="pilora_probe_steps")
            probe_ratio = gr.Slider(
                0.01, 0.99, value=round(d.pilora_probe_ratio, 4), step=0.01, elem_id="pilora_probe_ratio"
            )
            partition = gr.Dropdown(
                ["consistent", "top_half", "cumulative"], value=d.pilora_partition, elem_id="pilora_partition"
            )
        with gr.Row():
            threshold = gr.Slider(0.05, 1.0, value=d.pilora_threshold, step=0.05, elem_id="pilora_threshold")
            init = gr.Dropdown(["fresh", "carry"], value=d.pilora_init, elem_id="pilora_init")
            target = gr.Textbox(value=d.pilora_target, elem_id="pilora_target")
            seed = gr.Number(value=d.pilora_seed, precision=0, elem_id="pilora_seed")
    return dict(
        pilora_tab=pilora_tab,
        pilora_note=pilora_note,
        pilora_rank=rank,
        pilora_supplementary_rank=sup,
        pilora_alpha=alpha,
        pilora_dropout=dropout,
        pilora_interval=interval,
        pilora_probe_steps=probe_steps,
        pilora_probe_ratio=probe_ratio,
        pilora_partition=partition,
        pilora_threshold=threshold,
        pilora_init=init,
        pilora_target=target,
        pilora_seed=seed,
    )


def pilora_train_args(get: Callable[[str], Any]) -> dict[str, Any]:
    """The ``pilora_*`` training arguments from the Train tab values (``get("train.<name>")``)."""
    args = {name: get(f"train.{name}") for name in PILORA_INPUT_NAMES}
    for name in INTEGER_FIELDS:
        args[name] = int(args[name])
    for name in FLOAT_FIELDS:
        args[name] = float(args[name])
    return args


def pilora_ui_error(get: Callable[[str], Any], lang: str, stage: str, device_count: int) -> str:
    """The message explaining why PiLoRA cannot start with the current Train tab settings, or ''."""
    if stage not in SUPPORTED_STAGES:
        key = "err_pilora_stage"
    elif get("train.ds_stage") != "none":
        key = "err_pilora_deepspeed"
    elif get("top.quantization_bit") not in (None, "none", ""):
        key = "err_pilora_quantization"
    elif get("top.booster") == "unsloth":
        key = "err_pilora_unsloth"
    elif device_count > 1:
        key = "err_pilora_devices"
    else:
        return ""
    return PILORA_ALERTS[key].get(lang, PILORA_ALERTS[key]["en"])
