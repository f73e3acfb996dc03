"""A hand-made LoSiA run folder with known subnets, learning rates and weights (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

Q = "model.layers.0.self_attn.q_proj"
DOWN = "model.layers.0.mlp.down_proj"
HEAD = "lm_head"
SHAPES = {Q: (8, 6), DOWN: (6, 10), HEAD: (12, 6)}
# Group 0 (layer 0) reselects after step 4, group 1 (lm_head) after step 6; the run ends at step 10.
START = {
    Q: ([0, 1], [0, 1, 2]),
    DOWN: ([2, 3, 4], [0, 9]),
    HEAD: ([0, 5, 7], None),
}
RESELECT_4 = {Q: ([1, 5], [2, 3, 4]), DOWN: ([2, 3, 5], [0, 1])}
RESELECT_6 = {HEAD: ([5, 7, 11], None)}
FINAL_STEP = 10


def _targets(indices: dict, with_shape: bool) -> list[dict]:
    rows = []
    for name, (out_idx, in_idx) in indices.items():
        row = {"name": name, "group": 1 if name == HEAD else 0}
        if with_shape:
            row["shape"] = list(SHAPES[name])
        rows.append({**row, "out_idx": out_idx, "in_idx": in_idx})
    return rows


def subnet_lines() -> list[dict]:
    groups0, groups1 = {"0": "model.layers.0"}, {"1": "lm_head"}
    return [
        {
            "step": 0,
            "event": "start",
            "groups": {**groups0, **groups1},
            "targets": _targets(START, True),
            "base_model": None,
        },
        {"step": 4, "event": "reselect", "groups": groups0, "targets": _targets(RESELECT_4, False)},
        {"step": 6, "event": "reselect", "groups": groups1, "targets": _targets(RESELECT_6, False)},
        {"step": FINAL_STEP, "event": "end"},
    ]


def lr_lines() -> list[dict]:
    """Base rate 1e-3; each group rewarms over T = 2 steps after its reselection (r / T: 0 then 0.5)."""
    lines = []
    for step in range(1, FINAL_STEP + 1):
        layer = {5: 0.0, 6: 0.5e-3}.get(step, 1e-3)
        head = {7: 0.0, 8: 0.5e-3}.get(step, 1e-3)
        lines.append({"step": step, "lr": {"extra": 1e-3, "model.layers.0": layer, "lm_head": head}, "measuring": []})
        if step == 4:
            lines.append({"step": 4, "event": "reselect", "groups": ["model.layers.0"]})
        if step == 6:
            lines.append({"step": 6, "event": "reselect", "groups": ["lm_head"]})
    return lines


def write_jsonl(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def base_weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    weights = {f"{name}.weight": torch.randn(*shape, generator=generator) for name, shape in SHAPES.items()}
    weights["model.norm.weight"] = torch.ones(6)
    return weights


def trained_weights(base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Changes only inside blocks: q_proj entries (0, 0) and (5, 4); down_proj (3, 9); lm_head row 11 entirely."""
    trained = {name: tensor.clone() for name, tensor in base.items()}
    trained[f"{Q}.weight"][0, 0] += 0.5
    trained[f"{Q}.weight"][5, 4] -= 0.25
    trained[f"{DOWN}.weight"][3, 9] += 1.0
    trained[f"{HEAD}.weight"][11] += 0.125
    return trained


def make_run(folder: Path, base_dir: Path | None = None, with_weights: bool = True) -> Path:
    """Write the logs (and, with_weights, a base model folder and the trained model) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "losia_subnets.jsonl", subnet_lines())
    write_jsonl(folder / "losia_log.jsonl", lr_lines())
    (folder / "losia_config.json").write_text(json.dumps({"config": {"selection": "best"}, "step": FINAL_STEP}))
    if with_weights:
        base = base_weights()
        base_dir = base_dir or folder.parent / "base"
        base_dir.mkdir(parents=True, exist_ok=True)
        save_file(base, str(base_dir / "model.safetensors"), metadata={"format": "pt"})
        save_file(trained_weights(base), str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text("{}")
    return folder
