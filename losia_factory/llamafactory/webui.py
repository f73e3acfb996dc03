"""LoSiA in the LLaMA Board web UI: a method choice, an accordion of ``losia_*`` fields, checks and labels.

The Train tab also gets PiLoRA's accordion (``webui_pilora``); one method switch shows the one that applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from .arguments import METHOD, LosiaArguments
from .pilora_arguments import PILORA_METHOD
from .webui_pilora import PILORA_INPUT_NAMES, create_pilora_accordion

LANGS = ("en", "ru", "zh", "ko", "ja")

# Element name -> {lang: {"label": ..., "info": ...}} (LLaMA Board looks labels up by element name).
LOCALES: dict[str, dict[str, dict[str, str]]] = {
    "losia_tab": {
        "en": {"label": "LoSiA configurations"},
        "ru": {"label": "Конфигурации LoSiA"},
        "zh": {"label": "LoSiA 参数设置"},
        "ko": {"label": "LoSiA 구성"},
        "ja": {"label": "LoSiA 設定"},
    },
    "losia_note": {
        "en": {
            "value": "LoSiA trains one subnet of every linear layer and saves a full model. It runs on one GPU or "
            "several (DDP, DeepSpeed stage 2 without offload), unquantized, with bf16 or fp32 compute."
        },
        "ru": {
            "value": "LoSiA обучает одну подсеть каждого линейного слоя и сохраняет полную модель. Работает на одной "
            "или нескольких GPU (DDP, DeepSpeed stage 2 без выгрузки), без квантования, с вычислениями в bf16 или fp32."
        },
        "zh": {
            "value": "LoSiA 训练每个线性层中的一个子网络并保存完整模型。支持单卡或多卡（DDP、不卸载的 DeepSpeed stage 2），不量化，计算类型为 bf16 或 fp32。"
        },
        "ko": {
            "value": "LoSiA는 각 선형 계층의 서브네트워크 하나를 학습하고 전체 모델을 저장합니다. GPU 하나 또는 여러 개"
            "(DDP, 오프로드 없는 DeepSpeed stage 2)에서 양자화 없이 bf16 또는 fp32 연산으로 실행됩니다."
        },
        "ja": {
            "value": "LoSiA は各線形層のサブネットワークを 1 つ学習し、完全なモデルを保存します。1 枚または複数の GPU"
            "（DDP、オフロードなしの DeepSpeed stage 2）で、量子化なし、bf16 または fp32 の計算型で動作します。"
        },
    },
    "losia_rank_factor": {
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
    "losia_time_slot": {
        "en": {"label": "Time slot T", "info": "Steps a layer measures importance before it reselects its subnet."},
        "ru": {
            "label": "Временной слот T",
            "info": "Число шагов измерения важности слоя перед повторным выбором подсети.",
        },
        "zh": {"label": "时间槽 T", "info": "每层在重新选择子网络前计算重要性的步数。"},
        "ko": {"label": "타임 슬롯 T", "info": "계층이 서브네트워크를 다시 선택하기 전 중요도를 측정하는 스텝 수."},
        "ja": {"label": "タイムスロット T", "info": "層がサブネットワークを再選択する前に重要度を測るステップ数。"},
    },
    "losia_output_rank_factor": {
        "en": {"label": "Output-layer factor p_o", "info": "Fraction of lm_head rows trained; 0 freezes lm_head."},
        "ru": {
            "label": "Коэффициент выходного слоя p_o",
            "info": "Доля обучаемых строк lm_head; 0 замораживает lm_head.",
        },
        "zh": {"label": "输出层因子 p_o", "info": "训练 lm_head 的行比例；0 表示冻结 lm_head。"},
        "ko": {"label": "출력 계층 계수 p_o", "info": "학습할 lm_head 행의 비율; 0이면 lm_head를 고정합니다."},
        "ja": {"label": "出力層係数 p_o", "info": "学習する lm_head の行の割合。0 で lm_head を固定します。"},
    },
    "losia_importance": {
        "en": {"label": "Importance", "info": "sensitivity (paper) or gradient magnitude."},
        "ru": {"label": "Важность", "info": "sensitivity (как в статье) или модуль градиента."},
        "zh": {"label": "重要性", "info": "sensitivity（论文）或梯度幅值。"},
        "ko": {"label": "중요도", "info": "sensitivity(논문) 또는 그레디언트 크기."},
        "ja": {"label": "重要度", "info": "sensitivity（論文）または勾配の大きさ。"},
    },
    "losia_mode": {
        "en": {"label": "Reselection mode", "info": "async (paper), sync, once or fixed subnets."},
        "ru": {"label": "Режим перевыбора", "info": "async (статья), sync, once или fixed."},
        "zh": {"label": "重选模式", "info": "async（论文）、sync、once 或 fixed。"},
        "ko": {"label": "재선택 모드", "info": "async(논문), sync, once 또는 fixed."},
        "ja": {"label": "再選択モード", "info": "async（論文）、sync、once、fixed。"},
    },
    "losia_pro": {
        "en": {"label": "LoSiA-Pro", "info": "Faster, leaner backward with identical updates."},
        "ru": {"label": "LoSiA-Pro", "info": "Более быстрый и экономный обратный проход с теми же обновлениями."},
        "zh": {"label": "LoSiA-Pro", "info": "更快、更省显存的反向传播，更新完全相同。"},
        "ko": {"label": "LoSiA-Pro", "info": "동일한 업데이트로 더 빠르고 가벼운 역전파."},
        "ja": {"label": "LoSiA-Pro", "info": "同じ更新で、より速く省メモリな逆伝播。"},
    },
    "losia_target": {
        "en": {"label": "Target modules", "info": "Linear layers to train, comma separated; all for every one."},
        "ru": {"label": "Целевые модули", "info": "Обучаемые линейные слои через запятую; all — все."},
        "zh": {"label": "目标模块", "info": "要训练的线性层，逗号分隔；all 表示全部。"},
        "ko": {"label": "대상 모듈", "info": "학습할 선형 계층(쉼표로 구분); all은 전부."},
        "ja": {"label": "対象モジュール", "info": "学習する線形層（カンマ区切り）。all ですべて。"},
    },
    "losia_extra_modules": {
        "en": {"label": "Extra modules", "info": "Parameters trained fully, comma separated (e.g. norm)."},
        "ru": {
            "label": "Дополнительные модули",
            "info": "Полностью обучаемые параметры через запятую (например, norm).",
        },
        "zh": {"label": "额外模块", "info": "完全训练的参数，逗号分隔（例如 norm）。"},
        "ko": {"label": "추가 모듈", "info": "전체 학습할 파라미터(쉼표로 구분, 예: norm)."},
        "ja": {"label": "追加モジュール", "info": "完全に学習するパラメータ（カンマ区切り、例: norm）。"},
    },
    "losia_selection": {
        "en": {"label": "Localization", "info": "best, input_first or output_first greedy search."},
        "ru": {"label": "Локализация", "info": "Жадный поиск best, input_first или output_first."},
        "zh": {"label": "定位策略", "info": "best、input_first 或 output_first 贪心搜索。"},
        "ko": {"label": "위치 탐색", "info": "best, input_first 또는 output_first 탐욕 탐색."},
        "ja": {"label": "局所化", "info": "best、input_first、output_first の貪欲探索。"},
    },
    "losia_ema_beta1": {
        "en": {"label": "Importance EMA β1", "info": "Smoothing of the importance score."},
        "ru": {"label": "EMA важности β1", "info": "Сглаживание оценки важности."},
        "zh": {"label": "重要性 EMA β1", "info": "重要性分数的平滑系数。"},
        "ko": {"label": "중요도 EMA β1", "info": "중요도 점수의 평활 계수."},
        "ja": {"label": "重要度 EMA β1", "info": "重要度スコアの平滑化係数。"},
    },
    "losia_ema_beta2": {
        "en": {"label": "Uncertainty EMA β2", "info": "Smoothing of the importance uncertainty."},
        "ru": {"label": "EMA неопределённости β2", "info": "Сглаживание неопределённости важности."},
        "zh": {"label": "不确定性 EMA β2", "info": "重要性不确定性的平滑系数。"},
        "ko": {"label": "불확실성 EMA β2", "info": "중요도 불확실성의 평활 계수."},
        "ja": {"label": "不確実性 EMA β2", "info": "重要度の不確実性の平滑化係数。"},
    },
    "losia_importance_dtype": {
        "en": {"label": "Importance dtype", "info": "Precision of the importance buffers."},
        "ru": {"label": "Тип буферов важности", "info": "Точность буферов важности."},
        "zh": {"label": "重要性精度", "info": "重要性缓冲区的数据类型。"},
        "ko": {"label": "중요도 dtype", "info": "중요도 버퍼의 정밀도."},
        "ja": {"label": "重要度の dtype", "info": "重要度バッファの精度。"},
    },
    "losia_layers_path": {
        "en": {"label": "Layers path", "info": "Decoder-layer list, e.g. model.layers; empty: automatic."},
        "ru": {
            "label": "Путь к слоям",
            "info": "Список слоёв декодера, например model.layers; пусто — автоматически.",
        },
        "zh": {"label": "层路径", "info": "解码器层列表，例如 model.layers；留空自动查找。"},
        "ko": {"label": "계층 경로", "info": "디코더 계층 목록(예: model.layers); 비우면 자동."},
        "ja": {"label": "層のパス", "info": "デコーダ層のリスト（例: model.layers）。空欄で自動。"},
    },
    "losia_seed": {
        "en": {"label": "Subnet seed", "info": "Seed of the random initial subnets."},
        "ru": {"label": "Сид подсетей", "info": "Сид случайных начальных подсетей."},
        "zh": {"label": "子网络种子", "info": "随机初始子网络的种子。"},
        "ko": {"label": "서브네트워크 시드", "info": "무작위 초기 서브네트워크의 시드."},
        "ja": {"label": "サブネットのシード", "info": "ランダムな初期サブネットワークのシード。"},
    },
    "losia_rewarm": {
        "en": {"label": "Rewarm", "info": "Ramp a layer's learning rate up again after it reselects (paper)."},
        "ru": {
            "label": "Повторный разогрев",
            "info": "Снова поднимать скорость обучения слоя после перевыбора (статья).",
        },
        "zh": {"label": "重新预热", "info": "层重选子网络后重新线性预热其学习率（论文）。"},
        "ko": {"label": "재워밍업", "info": "계층이 재선택한 뒤 학습률을 다시 올립니다(논문)."},
        "ja": {"label": "再ウォームアップ", "info": "層の再選択後に学習率を再び立ち上げます（論文）。"},
    },
    "losia_adam_reset": {
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
    "losia_output_order": {
        "en": {"label": "lm_head order", "info": "lm_head measures importance in the first or in the last time slot."},
        "ru": {"label": "Порядок lm_head", "info": "lm_head оценивает важность в первом или в последнем интервале."},
        "zh": {"label": "lm_head 顺序", "info": "lm_head 在第一个或最后一个时间槽计算重要性。"},
        "ko": {"label": "lm_head 순서", "info": "lm_head가 첫 번째 또는 마지막 타임 슬롯에서 중요도를 측정합니다."},
        "ja": {"label": "lm_head の順番", "info": "lm_head が最初または最後のタイムスロットで重要度を測ります。"},
    },
}

# Alert key -> {lang: message}, shown instead of starting a run LoSiA cannot do.
ALERTS: dict[str, dict[str, str]] = {
    "err_losia_fp16": {
        "en": "LoSiA does not support fp16 (loss scaling): choose bf16 or fp32 as compute type.",
        "ru": "LoSiA не поддерживает fp16 (масштабирование потерь): выберите тип вычислений bf16 или fp32.",
        "zh": "LoSiA 不支持 fp16（损失缩放）：请将计算类型设为 bf16 或 fp32。",
        "ko": "LoSiA는 fp16(손실 스케일링)을 지원하지 않습니다: 연산 유형으로 bf16 또는 fp32를 선택하세요.",
        "ja": "LoSiA は fp16（損失スケーリング）に対応していません。計算型に bf16 か fp32 を選んでください。",
    },
    "err_losia_zero3": {
        "en": "LoSiA runs with DeepSpeed stage 2, not stage 3 (it writes the subnets into the backbone weights that "
        "stage 3 partitions): choose stage 2 or none.",
        "ru": "LoSiA работает с DeepSpeed stage 2, но не stage 3 (она записывает подсети в веса модели, которые stage 3 "
        "разбивает): выберите stage 2 или none.",
        "zh": "LoSiA 支持 DeepSpeed stage 2，不支持 stage 3（它会把子网络写回主干权重，而 stage 3 会切分这些权重）：请选择 2 或 none。",
        "ko": "LoSiA는 DeepSpeed stage 2에서 실행되며 stage 3은 지원하지 않습니다(서브네트워크를 stage 3이 분할하는 백본 "
        "가중치에 기록하기 때문): stage 2 또는 none을 선택하세요.",
        "ja": "LoSiA は DeepSpeed stage 2 で動作し、stage 3 には対応していません（stage 3 が分割するバックボーンの重みに"
        "サブネットワークを書き込むため）。stage 2 か none を選んでください。",
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


def create_losia_accordion() -> dict[str, Any]:
    """The LoSiA accordion of the Train tab (hidden until ``losia`` is the fine-tuning method)."""
    import gradio as gr

    defaults = LosiaArguments()
    with gr.Accordion(open=True, visible=False, elem_id="losia_tab") as losia_tab:
        losia_note = gr.Markdown()
        with gr.Row():
            rank = gr.Slider(0.005, 1.0, value=defaults.losia_rank_factor, step=0.005, elem_id="losia_rank_factor")
            slot = gr.Slider(1, 2000, value=defaults.losia_time_slot, step=1, elem_id="losia_time_slot")
            out_rank = gr.Slider(
                0.0, 1.0, value=defaults.losia_output_rank_factor, step=0.005, elem_id="losia_output_rank_factor"
            )
            pro = gr.Checkbox(value=defaults.losia_pro, elem_id="losia_pro")
            rewarm = gr.Checkbox(value=defaults.losia_rewarm, elem_id="losia_rewarm")
        with gr.Row():
            importance = gr.Dropdown(
                ["sensitivity", "gradient"], value=defaults.losia_importance, elem_id="losia_importance"
            )
            mode = gr.Dropdown(["async", "sync", "once", "fixed"], value=defaults.losia_mode, elem_id="losia_mode")
            selection = gr.Dropdown(
                ["best", "input_first", "output_first"], value=defaults.losia_selection, elem_id="losia_selection"
            )
            target = gr.Textbox(value=defaults.losia_target, elem_id="losia_target")
            extra = gr.Textbox(value="", elem_id="losia_extra_modules")
        with gr.Row():
            beta1 = gr.Slider(0.01, 0.99, value=defaults.losia_ema_beta1, step=0.01, elem_id="losia_ema_beta1")
            beta2 = gr.Slider(0.01, 0.99, value=defaults.losia_ema_beta2, step=0.01, elem_id="losia_ema_beta2")
            dtype = gr.Dropdown(
                ["float32", "bfloat16", "float16"],
                value=defaults.losia_importance_dtype,
                elem_id="losia_importance_dtype",
            )
            layers_path = gr.Textbox(value="", elem_id="losia_layers_path")
            seed = gr.Number(value=defaults.losia_seed, precision=0, elem_id="losia_seed")
            adam_reset = gr.Dropdown(["moments", "state"], value=defaults.losia_adam_reset, elem_id="losia_adam_reset")
            output_order = gr.Dropdown(
                ["first", "last"], value=defaults.losia_output_order, elem_id="losia_output_order"
            )
    return dict(
        losia_tab=losia_tab,
        losia_note=losia_note,
        losia_rank_factor=rank,
        losia_time_slot=slot,
        losia_output_rank_factor=out_rank,
        losia_pro=pro,
        losia_importance=importance,
        losia_mode=mode,
        losia_selection=selection,
        losia_target=target,
        losia_extra_modules=extra,
        losia_ema_beta1=beta1,
        losia_ema_beta2=beta2,
        losia_importance_dtype=dtype,
        losia_layers_path=layers_path,
        losia_seed=seed,
        losia_rewarm=rewarm,
        losia_adam_reset=adam_reset,
        losia_output_order=output_order,
    )


# Every losia_* argument has an element of the same name in the Train tab.
INPUT_NAMES = tuple(f.name for f in fields(LosiaArguments))


def extend_train_tab(create_train_tab: Callable) -> Callable:
    """Wrap LLaMA Board's ``create_train_tab`` so the Train tab also holds the LoSiA accordion.

    The accordion is built when the tab asks for its base elements (its first statement), so it sits at the top of
    the tab and its fields join the inputs of Preview, Start, Save and Load.
    """

    def wrapped(engine) -> dict[str, Any]:
        manager = engine.manager
        original_get_base_elems = manager.get_base_elems
        created: dict[str, Any] = {}

        def get_base_elems():
            elems = original_get_base_elems()
            if not created:
                created.update(create_losia_accordion())
                created.update(create_pilora_accordion())
                elems.update(created[name] for name in INPUT_NAMES + PILORA_INPUT_NAMES)
            return elems

        manager.get_base_elems = get_base_elems
        try:
            elem_dict = create_train_tab(engine)
        finally:
            manager.get_base_elems = original_get_base_elems
        if not created:
            raise RuntimeError("LLaMA Board's create_train_tab no longer asks for its base elements first.")
        _wire_method_switch(manager, created, elem_dict)
        elem_dict.update(created)
        return elem_dict

    wrapped.__wrapped__ = create_train_tab
    return wrapped


def _wire_method_switch(manager, created: dict[str, Any], train: dict[str, Any]) -> None:
    """Show the accordion of ``losia`` / ``pilora`` and turn off DeepSpeed offload, which neither supports."""
    import gradio as gr

    finetuning_type = manager.get_elem_by_id("top.finetuning_type")

    def on_method(method: str):
        ours = method in (METHOD, PILORA_METHOD)
        offload = gr.update(value=False, interactive=False) if ours else gr.update(interactive=True)
        return gr.update(visible=method == METHOD), gr.update(visible=method == PILORA_METHOD), offload

    outputs = [created["losia_tab"], created["pilora_tab"], train["ds_offload"]]
    finetuning_type.change(on_method, [finetuning_type], outputs, queue=False)


def losia_train_args(get: Callable[[str], Any]) -> dict[str, Any]:
    """The ``losia_*`` training arguments from the Train tab values (``get("train.<name>")``)."""
    args = {name: get(f"train.{name}") for name in INPUT_NAMES}
    args["losia_time_slot"] = int(args["losia_time_slot"])
    args["losia_seed"] = int(args["losia_seed"])
    for name in ("losia_rank_factor", "losia_output_rank_factor", "losia_ema_beta1", "losia_ema_beta2"):
        args[name] = float(args[name])
    args["losia_extra_modules"] = args["losia_extra_modules"] or None
    args["losia_layers_path"] = args["losia_layers_path"] or None
    return args


def losia_ui_error(get: Callable[[str], Any], lang: str, stage: str) -> str:
    """The message explaining why LoSiA cannot start with the current Train tab settings, or ''."""
    if stage == "ppo":
        key = "err_losia_stage"
    elif get("train.compute_type") == "fp16":
        key = "err_losia_fp16"
    elif get("train.ds_stage") == "3":
        key = "err_losia_zero3"
    elif get("top.booster") == "unsloth":
        key = "err_losia_unsloth"
    else:
        return ""
    return ALERTS[key].get(lang, ALERTS[key]["en"])
