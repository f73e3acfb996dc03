"""Memory and trainable-parameter estimator for LoSiA, from a model config alone (no weights).

The static memory of a LoSiA run is: the backbone weights (load dtype), the fp32 master blocks, two fp32 Adam moments
per block entry, the fp32 block gradients, and, for the one group measuring importance at a time, its summed full
gradient (fp32) and two importance buffers (``Ibar``, ``Ubar``). Activations depend on batch and sequence length and
are not included. The paper's Table 14 gives the same terms with ``K`` square ``d x d`` matrices per layer; this
estimator uses the real shapes (attention with grouped key/value heads, the MLP's intermediate size).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .core.selection import subnet_size

GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """What the estimator needs from a decoder-only transformer config."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: dict, name: str = "model") -> ModelShape:
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        return cls(
            name=name,
            hidden_size=hidden,
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads,
            vocab_size=config["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """Shapes ``(out, in)`` of the seven linear layers of one decoder layer."""
        d, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "q_proj": (q, d),
            "k_proj": (kv, d),
            "v_proj": (kv, d),
            "o_proj": (d, q),
            "gate_proj": (i, d),
            "up_proj": (i, d),
            "down_proj": (d, i),
        }

    def num_parameters(self) -> int:
        layer = sum(o * n for o, n in self.linears().values()) + 2 * self.hidden_size  # two norms
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return self.num_layers * layer + embed + head + self.hidden_size


PRESETS = {
    "llama2-7b": ModelShape("LLaMA-2 7B", 4096, 11008, 32, 32, 32, 128, 32000, False),
    "llama2-13b": ModelShape("LLaMA-2 13B", 5120, 13824, 40, 40, 40, 128, 32000, False),
    "gemma-2b": ModelShape("Gemma-2B", 2048, 16384, 18, 8, 1, 256, 256000, True),
}

# The paper's Table 15 (LLaMA-2 7B): (p, p_o) -> (#Trainable in millions, measured GPU memory in GB).
PAPER_TABLE15 = {
    (1 / 16, 1 / 8): (42.8, 21.84),
    (1 / 8, 1 / 8): (122.1, 21.87),
    (1 / 4, 1 / 8): (439.3, 22.73),
    (1 / 2, 1 / 8): (1700.8, 28.73),
    (1 / 16, 1.0): (158.0, 22.24),
    (1 / 8, 1.0): (238.9, 22.84),
    (1 / 4, 1.0): (562.2, 23.37),
    (1 / 2, 1.0): (1855.7, 28.98),
}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def load_shape(model: str) -> ModelShape:
    """A preset name (``llama2-7b``, ``llama2-13b``, ``gemma-2b``) or a path to a config.json / model folder."""
    if model in PRESETS:
        return PRESETS[model]
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(
            f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json or a folder holding one."
        )
    config = json.loads(path.read_text())
    config = config.get("text_config", config)
    try:
        return ModelShape.from_config(config, name=path.parent.name or str(path))
    except KeyError as err:
        raise ValueError(f"{path} lacks {err.args[0]!r}; it does not look like a decoder-only LLM config.") from None


def estimate(
    shape: ModelShape,
    rank_factor: float,
    output_rank_factor: float,
    weight_dtype: str = "bfloat16",
    importance_dtype: str = "float32",
) -> dict[str, float]:
    """Trainable parameters and static memory (bytes) of a LoSiA run on ``shape``."""
    if not 0 < rank_factor <= 1:
        raise ValueError(f"rank_factor must be in (0, 1], got {rank_factor}")
    if not 0 <= output_rank_factor <= 1:
        raise ValueError(f"output_rank_factor must be in [0, 1], got {output_rank_factor}")
    layer_blocks = sum(
        subnet_size(out, rank_factor) * subnet_size(inp, rank_factor) for out, inp in shape.linears().values()
    )
    layer_full = sum(out * inp for out, inp in shape.linears().values())
    head_full = shape.vocab_size * shape.hidden_size
    head_block = subnet_size(shape.vocab_size, output_rank_factor) * shape.hidden_size if output_rank_factor else 0
    trainable = shape.num_layers * layer_blocks + head_block
    largest_group = max(layer_full, head_full if output_rank_factor else 0)
    wbytes, ibytes = DTYPE_BYTES[weight_dtype], DTYPE_BYTES[importance_dtype]
    parts = {
        "weights": shape.num_parameters() * wbytes,
        "subnet_masters": trainable * 4,
        "adam_moments": 2 * trainable * 4,
        "block_gradients": trainable * 4,
        "measuring_full_gradient": largest_group * 4,
        "importance_buffers": 2 * largest_group * ibytes,
    }
    parts["total_static"] = sum(parts.values())
    return {"trainable": trainable, "layer_blocks": layer_blocks, "head_block": head_block, **parts}


def report(
    shape: ModelShape,
    rank_factors: list[float],
    output_rank_factors: list[float],
    weight_dtype: str,
    importance_dtype: str,
) -> str:
    """A markdown report for every (p, p_o) pair, with the paper's Table 15 next to LLaMA-2 7B rows."""
    lines = [
        f"{shape.name}: {shape.num_parameters() / 1e9:.2f}B parameters, {shape.num_layers} layers, hidden "
        f"{shape.hidden_size}, vocabulary {shape.vocab_size}; weights in {weight_dtype}, masters/moments/gradients in "
        f"float32, importance buffers in {importance_dtype}. Memory in GiB; activations not included.",
        "",
        "| p | p_o | trainable (M) | paper (M) | weights | masters | moments | block grads | measuring grad | "
        "importance | total static | paper measured GB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p_o in output_rank_factors:
        for p in rank_factors:
            e = estimate(shape, p, p_o, weight_dtype, importance_dtype)
            paper = PAPER_TABLE15.get((p, p_o)) if shape == PRESETS["llama2-7b"] else None
            paper_m = f"{paper[0]:.1f}" if paper else "-"
            paper_gb = f"{paper[1]:.2f}" if paper else "-"
            gib = {k: e[k] / GIB for k in e if k not in ("trainable", "layer_blocks", "head_block")}
            lines.append(
                f"| {_fraction(p)} | {_fraction(p_o)} | {e['trainable'] / 1e6:.1f} | {paper_m} | "
                f"{gib['weights']:.2f} | {gib['subnet_masters']:.2f} | {gib['adam_moments']:.2f} | "
                f"{gib['block_gradients']:.2f} | {gib['measuring_full_gradient']:.2f} | "
                f"{gib['importance_buffers']:.2f} | {gib['total_static']:.2f} | {paper_gb} |"
            )
    return "\n".join(lines)


def _fraction(value: float) -> str:
    if value == 0:
        return "0"
    inverse = 1 / value
    return f"1/{round(inverse)}" if math.isclose(inverse, round(inverse)) and value < 1 else f"{value:g}"


def _parse_factors(text: str) -> list[float]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if "/" in item:
            num, den = item.split("/")
            out.append(float(num) / float(den))
        elif item:
            out.append(float(item))
    return out


def main(argv: list[str] | None = None) -> int:
    """``losia-factory estimate``."""
    parser = argparse.ArgumentParser(prog="losia-factory estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama2-7b", help=f"preset ({', '.join(PRESETS)}) or a config.json path")
    parser.add_argument("--rank-factor", default="1/16,1/8,1/4,1/2", help="p values, e.g. 1/8 or 1/16,1/8")
    parser.add_argument("--output-rank-factor", default="1/8,1", help="p_o values, e.g. 1/8 or 0")
    parser.add_argument("--weight-dtype", default="bfloat16", choices=tuple(DTYPE_BYTES))
    parser.add_argument("--importance-dtype", default="float32", choices=tuple(DTYPE_BYTES))
    args = parser.parse_args(argv)
    try:
        shape = load_shape(args.model)
        text = report(
            shape,
            _parse_factors(args.rank_factor),
            _parse_factors(args.output_rank_factor),
            args.weight_dtype,
            args.importance_dtype,
        )
    except ValueError as err:
        parser.error(str(err))
    print(text)
    return 0
