"""Web UI labels shared by the methods' descriptions (fields that both configs define alike)."""

from __future__ import annotations

# max_consecutive_nonfinite_steps -> {lang: {"label": ..., "info": ...}}: LoSiA and PiLoRA skip and count the same way.
NONFINITE_LIMIT_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "label": "Stop after N skipped steps",
        "info": "Steps with NaN/Inf gradients are skipped; this many in a row stop the run.",
    },
    "ru": {
        "label": "Остановка после N пропусков",
        "info": "Шаги с NaN/Inf в градиентах пропускаются; столько подряд останавливают обучение.",
    },
    "zh": {"label": "连续跳过 N 步后停止", "info": "梯度含 NaN/Inf 的步会被跳过；连续这么多步则停止训练。"},
    "ko": {
        "label": "N번 건너뛰면 중지",
        "info": "NaN/Inf 기울기가 있는 스텝은 건너뜁니다. 연속으로 이만큼이면 학습을 중지합니다.",
    },
    "ja": {
        "label": "N 回スキップで停止",
        "info": "勾配に NaN/Inf があるステップはスキップされ、連続でこの回数に達すると学習を停止します。",
    },
}
