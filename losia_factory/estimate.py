"""Memory and trainable-parameter estimator for LoSiA, from a model config alone (no weights).

The static memory of a LoSiA run is: the backbone weights (load dtype), the fp32 master blocks, two fp32 Adam moments
per block entry, the fp32 block gradients, and, for the one group measuring importance at a time, its summed full
gradient (fp32) and two importance buffers (``Ibar``, ``Ubar``). Activations depend on batch and sequence length and
are not included. The paper's Table 14 gives the same terms with ``K`` square ``d x d`` matrices per layer; this
estimator uses the real shapes (attention with grouped key/value heads, the MLP's intermediate size).

Data-parallel runs (``--gpus N --zero {0,1,2,3}``) are reported per GPU. Plain DDP (ZeRO 0) keeps everything on
every rank. Under DeepSpeed ZeRO-1 the engine owns the fp32 masters and Adam moments and partitions them over the
ranks, and the model's block parameters become copies in the training dtype; ZeRO-2 partitions the block gradients as
well; ZeRO-3 also partitions the backbone and the block copies, and gathers one module's weights at a time around its
forward and backward (plus the measuring group's weights for its importance). The measuring group's gradient sink and
its importance buffers are never partitioned: every rank scores the same averaged gradient.

``--fsdp`` is FSDP2 (``fully_shard``) as accelerate runs it: every parameter, backbone and fp32 block alike, is split
by rows over the ranks, and so are the block gradients and Adam moments; the blocks are the fp32 masters themselves
(no copies). With ``bf16`` accelerate keeps the sharded model in float32 and gathers it in bf16 for compute, so the
backbone shard costs 4 bytes per weight while the gathered layer and the weight all-gathers are in ``--weight-dtype``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from .core.selection import subnet_size
from .fractions import format_fraction, parse_fractions

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
    "llama2-70b": ModelShape("LLaMA-2 70B", 8192, 28672, 80, 64, 8, 128, 32000, False),
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

ZERO_STAGES = (0, 1, 2, 3)


def load_shape(model: str) -> ModelShape:
    """A preset name (``llama2-7b``, ``llama2-13b``, ``llama2-70b``, ``gemma-2b``) or a config.json / model folder."""
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


def check_parallel(gpus: int, zero: int, fsdp: bool = False) -> None:
    """Raise ``ValueError`` unless ``gpus`` ranks under ZeRO stage ``zero`` (or FSDP2) is a setting LoSiA supports."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"--gpus must be an integer >= 1, got {gpus!r}")
    if zero not in ZERO_STAGES:
        raise ValueError(f"--zero must be one of {', '.join(map(str, ZERO_STAGES))}, got {zero!r}")
    if fsdp and zero:
        raise ValueError(f"--fsdp and --zero {zero} exclude each other: FSDP and DeepSpeed are two engines; pick one.")


def parallel_setting(gpus: int, zero: int, fsdp: bool = False) -> str:
    """How the figures are meant, e.g. ``per GPU, 8 GPUs, DeepSpeed ZeRO-2``."""
    ranks = f"{gpus} GPU" if gpus == 1 else f"{gpus} GPUs"
    if fsdp:
        engine = "FSDP2"
    else:
        engine = f"DeepSpeed ZeRO-{zero}" if zero else "plain DDP" if gpus > 1 else "no data parallelism"
    return f"per GPU, {ranks}, {engine}"


def gradient_dtype(weight_dtype: str, zero: int) -> str:
    """The dtype of the block gradients (and of their all-reduce).

    Without DeepSpeed the block parameters are the fp32 masters, so their gradients are fp32. DeepSpeed casts the
    model, blocks included, to the training dtype and reduces the gradients in it (its default
    ``communication_data_type``).
    """
    return weight_dtype if zero else "float32"


def _shard(num_bytes: int, ranks: int) -> int:
    """One rank's share of ``num_bytes`` partitioned over ``ranks`` (rounded up; DeepSpeed's padding ignored)."""
    return -(-num_bytes // ranks)


def _group_sizes(shape: ModelShape, rank_factor: float, output_rank_factor: float) -> dict[str, int]:
    """Element counts of the blocks and the full weights of one decoder layer and of the output layer."""
    if not 0 < rank_factor <= 1:
        raise ValueError(f"rank_factor must be in (0, 1], got {rank_factor}")
    if not 0 <= output_rank_factor <= 1:
        raise ValueError(f"output_rank_factor must be in [0, 1], got {output_rank_factor}")
    layer_blocks = sum(
        subnet_size(out, rank_factor) * subnet_size(inp, rank_factor) for out, inp in shape.linears().values()
    )
    trained_head = output_rank_factor > 0  # p_o = 0: the output layer is frozen and is no LoSiA group
    # p_o = 1: the output layer trains densely on the base schedule; it never measures importance.
    head_group = 0 < output_rank_factor < 1
    head_block = subnet_size(shape.vocab_size, output_rank_factor) * shape.hidden_size if trained_head else 0
    return {
        "layer_blocks": layer_blocks,
        "head_block": head_block,
        "trainable": shape.num_layers * layer_blocks + head_block,
        "layer_full": sum(out * inp for out, inp in shape.linears().values()),
        "head_full": shape.vocab_size * shape.hidden_size if head_group else 0,
        "num_groups": shape.num_layers + head_group,
    }


def estimate(
    shape: ModelShape,
    rank_factor: float,
    output_rank_factor: float,
    weight_dtype: str = "bfloat16",
    importance_dtype: str = "float32",
    gpus: int = 1,
    zero: int = 0,
    fsdp: bool = False,
) -> dict[str, float]:
    """Trainable parameters and static memory (bytes, per GPU) of a LoSiA run on ``shape``.

    Args:
        shape: The model.
        rank_factor: p, the fraction of each decoder linear layer's rows and columns in its block.
        output_rank_factor: p_o, the fraction of the output layer's rows trained (0: frozen).
        weight_dtype: Dtype of the backbone (and, under DeepSpeed, of the model-side block copies).
        importance_dtype: Dtype of the importance EMA buffers.
        gpus: Number of data-parallel ranks.
        zero: DeepSpeed ZeRO stage (0: plain DDP, no DeepSpeed).
        fsdp: FSDP2 instead of DeepSpeed (``zero`` must be 0).

    Returns:
        Element counts (``trainable``, ``layer_blocks``, ``head_block``) and byte counts per GPU; ``block_copies``
        is 0 without DeepSpeed, where the block parameters are the fp32 masters themselves; ``gathered_weights``
        (ZeRO-3 and FSDP) is the largest group's weights gathered whole at once, the floor of the sharded engines'
        working set (their prefetch adds to it).
    """
    check_parallel(gpus, zero, fsdp)
    if fsdp:
        return _estimate_fsdp(shape, rank_factor, output_rank_factor, weight_dtype, importance_dtype, gpus)
    sizes = _group_sizes(shape, rank_factor, output_rank_factor)
    trainable = sizes["trainable"]
    largest_group = max(sizes["layer_full"], sizes["head_full"])
    wbytes, ibytes = DTYPE_BYTES[weight_dtype], DTYPE_BYTES[importance_dtype]
    # ZeRO-1 partitions the optimizer side (fp32 masters, Adam moments), ZeRO-2 the block gradients as well, ZeRO-3
    # the backbone and the model's block copies too.
    optimizer_ranks = gpus if zero >= 1 else 1
    gradient_ranks = gpus if zero >= 2 else 1
    weight_ranks = gpus if zero >= 3 else 1
    parts = {
        "weights": _shard(shape.num_parameters() * wbytes, weight_ranks),
        "block_copies": _shard(trainable * wbytes, weight_ranks) if zero else 0,
        "gathered_weights": largest_group * wbytes if zero >= 3 else 0,
        "subnet_masters": _shard(trainable * 4, optimizer_ranks),
        "adam_moments": _shard(2 * trainable * 4, optimizer_ranks),
        "block_gradients": _shard(trainable * DTYPE_BYTES[gradient_dtype(weight_dtype, zero)], gradient_ranks),
        # Whole on every rank: the sink is all-reduced each measuring step and every rank keeps the same EMAs.
        "measuring_full_gradient": largest_group * 4,
        "importance_buffers": 2 * largest_group * ibytes,
    }
    parts["total_static"] = sum(parts.values())
    return {"trainable": trainable, "layer_blocks": sizes["layer_blocks"], "head_block": sizes["head_block"], **parts}


def _estimate_fsdp(
    shape: ModelShape,
    rank_factor: float,
    output_rank_factor: float,
    weight_dtype: str,
    importance_dtype: str,
    gpus: int,
) -> dict[str, float]:
    """:func:`estimate` under FSDP2: everything trainable or not split by rows, the blocks being their own masters."""
    sizes = _group_sizes(shape, rank_factor, output_rank_factor)
    trainable = sizes["trainable"]
    largest_group = max(sizes["layer_full"], sizes["head_full"])
    parts = {
        # accelerate's FSDP2 keeps the sharded parameters in float32 whatever the load dtype (bf16 is for compute).
        "weights": _shard(shape.num_parameters() * 4, gpus),
        "block_copies": 0,
        "gathered_weights": largest_group * DTYPE_BYTES[weight_dtype],
        "subnet_masters": _shard(trainable * 4, gpus),
        "adam_moments": _shard(2 * trainable * 4, gpus),
        "block_gradients": _shard(trainable * 4, gpus),
        "measuring_full_gradient": largest_group * 4,
        "importance_buffers": 2 * largest_group * DTYPE_BYTES[importance_dtype],
    }
    parts["total_static"] = sum(parts.values())
    return {"trainable": trainable, "layer_blocks": sizes["layer_blocks"], "head_block": sizes["head_block"], **parts}


def communication(
    shape: ModelShape,
    rank_factor: float,
    output_rank_factor: float,
    weight_dtype: str = "bfloat16",
    zero: int = 0,
    fsdp: bool = False,
) -> dict[str, float]:
    """Bytes each rank puts into collectives per optimizer step (the tensors' sizes, not the traffic on the wire).

    The measuring group's full weight gradient (fp32) is all-reduced once per optimizer step. In the default async
    mode one group measures at every step: a decoder layer, or on its share of the steps the output layer; the mean
    over a cycle of G groups is the sum of all groups' full weights over G (the same in sync mode, where all groups
    measure during one slot in G). The block gradients are reduced once per optimizer step by DDP and ZeRO-1, and at
    every micro-batch by ZeRO-2 and ZeRO-3; under ZeRO the updated blocks are then all-gathered in the training
    dtype. ZeRO-3 all-gathers every weight for the forward pass and again for the backward pass of each micro-batch
    (a third time with gradient checkpointing), and LoSiA gathers the measuring group's weights once per step.

    Returns:
        ``importance_layer`` (a measuring decoder layer), ``importance_head`` (a measuring output layer, 0 when
        frozen), ``importance_mean`` (mean per step), ``block_gradients``, ``block_allgather`` (0 without ZeRO),
        ``weight_allgather`` (ZeRO-3: forward and backward of one micro-batch), ``measuring_weights`` (ZeRO-3: the
        measuring group's weights, mean per step) and ``total_mean`` (the sum of the last five). Under FSDP2 the
        block gradients are reduce-scattered in ``weight_dtype`` at every micro-batch, the blocks (float32) are
        gathered whole for the write-back after the step, the weight all-gathers carry the blocks too (in
        ``weight_dtype``) and the measuring group's weights are gathered in float32, the dtype FSDP2 stores them in.
    """
    check_parallel(1, zero, fsdp)
    sizes = _group_sizes(shape, rank_factor, output_rank_factor)
    layers = shape.num_layers * sizes["layer_full"]
    if fsdp:
        wbytes = DTYPE_BYTES[weight_dtype]
        parts = {
            "importance_layer": 4 * sizes["layer_full"],
            "importance_head": 4 * sizes["head_full"],
            "importance_mean": 4 * (layers + sizes["head_full"]) / sizes["num_groups"],
            "block_gradients": sizes["trainable"] * wbytes,
            "block_allgather": sizes["trainable"] * 4,
            "weight_allgather": 2 * (shape.num_parameters() + sizes["trainable"]) * wbytes,
            "measuring_weights": (layers + sizes["head_full"]) / sizes["num_groups"] * 4,
        }
        parts["total_mean"] = sum(v for k, v in parts.items() if k not in ("importance_layer", "importance_head"))
        return parts
    parts = {
        "importance_layer": 4 * sizes["layer_full"],
        "importance_head": 4 * sizes["head_full"],
        "importance_mean": 4 * (layers + sizes["head_full"]) / sizes["num_groups"],
        "block_gradients": sizes["trainable"] * DTYPE_BYTES[gradient_dtype(weight_dtype, zero)],
        "block_allgather": sizes["trainable"] * DTYPE_BYTES[weight_dtype] if zero else 0,
        "weight_allgather": 2 * shape.num_parameters() * DTYPE_BYTES[weight_dtype] if zero >= 3 else 0,
        "measuring_weights": (
            (layers + sizes["head_full"]) / sizes["num_groups"] * DTYPE_BYTES[weight_dtype] if zero >= 3 else 0
        ),
    }
    parts["total_mean"] = sum(
        parts[key]
        for key in ("importance_mean", "block_gradients", "block_allgather", "weight_allgather", "measuring_weights")
    )
    return parts


# (header, key of :func:`estimate`) of the memory table's byte columns; "block copies" only appears under DeepSpeed.
MEMORY_COLUMNS = (
    ("weights", "weights"),
    ("block copies", "block_copies"),
    ("masters", "subnet_masters"),
    ("moments", "adam_moments"),
    ("block grads", "block_gradients"),
    ("measuring grad", "measuring_full_gradient"),
    ("importance", "importance_buffers"),
    ("gathered", "gathered_weights"),
    ("total static", "total_static"),
)
MIB = 2**20


def report(
    shape: ModelShape,
    rank_factors: list[float],
    output_rank_factors: list[float],
    weight_dtype: str,
    importance_dtype: str,
    gpus: int = 1,
    zero: int = 0,
    fsdp: bool = False,
) -> str:
    """A markdown report for every (p, p_o) pair, with the paper's Table 15 next to LLaMA-2 7B rows.

    With ``gpus > 1``, ``zero > 0`` or ``fsdp`` the memory is per GPU and a line states the data-parallel setting;
    with ``gpus > 1`` a second table gives the bytes communicated per optimizer step.
    """
    check_parallel(gpus, zero, fsdp)
    lines = [_summary(shape, weight_dtype, importance_dtype, zero, fsdp)]
    if gpus > 1 or zero or fsdp:
        lines.append(_parallel_line(gpus, zero, fsdp))
    lines += [
        "",
        *_memory_table(shape, rank_factors, output_rank_factors, weight_dtype, importance_dtype, gpus, zero, fsdp),
    ]
    if gpus > 1:  # one rank communicates nothing
        lines += ["", *_communication_table(shape, rank_factors, output_rank_factors, weight_dtype, gpus, zero, fsdp)]
    return "\n".join(lines)


def _summary(shape: ModelShape, weight_dtype: str, importance_dtype: str, zero: int, fsdp: bool = False) -> str:
    if fsdp:
        dtypes = (
            "weights, blocks (the masters), moments and block gradients stored in float32 (accelerate's FSDP2), "
            f"gathered and reduced in {weight_dtype}"
        )
    elif zero:
        dtypes = (
            f"weights and block copies in {weight_dtype}, masters/moments in float32, block gradients in "
            f"{gradient_dtype(weight_dtype, zero)}"
        )
    else:
        dtypes = f"weights in {weight_dtype}, masters/moments/gradients in float32"
    return (
        f"{shape.name}: {shape.num_parameters() / 1e9:.2f}B parameters, {shape.num_layers} layers, hidden "
        f"{shape.hidden_size}, vocabulary {shape.vocab_size}; {dtypes}, importance buffers in {importance_dtype}. "
        "Memory in GiB; activations not included."
    )


def _parallel_line(gpus: int, zero: int, fsdp: bool = False) -> str:
    if fsdp:
        return (
            f"Data parallel: {parallel_setting(gpus, zero, fsdp)}; weights, blocks, moments and block grads are split "
            f"{gpus} ways by rows, the rest is whole on every GPU; one decoder layer is gathered whole at a time "
            "(FSDP2 prefetches the next one too). FSDP's communication buffers are not included."
        )
    split = {
        0: "",
        1: "masters and moments",
        2: "masters, moments and block grads",
        3: "weights, block copies, masters, moments and block grads",
    }[zero]
    where = (
        f"{split} are split {gpus} ways, the rest is whole on every GPU"
        if zero and gpus > 1
        else f"{split} live in the DeepSpeed engine (partitions of size 1)"
        if zero
        else "every GPU holds everything"
    )
    buffers = "DeepSpeed's communication buckets" if zero else "DDP's gradient buckets"
    return f"Data parallel: {parallel_setting(gpus, zero)}; {where}. {buffers} are not included."


def _memory_table(
    shape: ModelShape,
    rank_factors: list[float],
    output_rank_factors: list[float],
    weight_dtype: str,
    importance_dtype: str,
    gpus: int,
    zero: int,
    fsdp: bool = False,
) -> list[str]:
    columns = [
        (header, key)
        for header, key in MEMORY_COLUMNS
        if (zero or key != "block_copies") and (zero >= 3 or fsdp or key != "gathered_weights")
    ]
    headers = ["p", "p_o", "trainable (M)", "paper (M)", *(header for header, _ in columns), "paper measured GB"]
    lines = ["| " + " | ".join(headers) + " |", "|---|---|" + "---:|" * (len(headers) - 2)]
    for p_o in output_rank_factors:
        for p in rank_factors:
            e = estimate(shape, p, p_o, weight_dtype, importance_dtype, gpus, zero, fsdp)
            paper = PAPER_TABLE15.get((p, p_o)) if shape == PRESETS["llama2-7b"] else None
            # The paper measured one GPU without DeepSpeed: its memory is not comparable to other settings.
            paper_gb = f"{paper[1]:.2f}" if paper and gpus == 1 and not zero and not fsdp else "-"
            cells = [
                format_fraction(p),
                format_fraction(p_o),
                f"{e['trainable'] / 1e6:.1f}",
                f"{paper[0]:.1f}" if paper else "-",
                *(f"{e[key] / GIB:.2f}" for _, key in columns),
                paper_gb,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _communication_table(
    shape: ModelShape,
    rank_factors: list[float],
    output_rank_factors: list[float],
    weight_dtype: str,
    gpus: int,
    zero: int,
    fsdp: bool = False,
) -> list[str]:
    full = _group_sizes(shape, 1.0, 0.5)  # full weight counts do not depend on p and p_o (0 < p_o < 1: a head group)
    layer_weights, head_weights = full["layer_full"], full["head_full"]
    head = (
        f"; the output layer, on 1 step in {shape.num_layers + 1} when p_o > 0: {4 * head_weights:,} bytes "
        f"({head_weights:,} weights x 4 B)"
        if any(output_rank_factors)
        else ""
    )
    if fsdp:
        notes = [
            f"Block gradients reduce-scattered in {weight_dtype} with their layer's gradients, at every micro-batch "
            "(multiply by the accumulation steps); the updated blocks (float32) are gathered for the write-back.",
            f"FSDP2 weight all-gathers in {weight_dtype}, blocks included: every layer for the forward and again for "
            "the backward of each micro-batch (multiply by the accumulation steps), and the measuring group's weights "
            "in float32 once per step for its importance (mean over a cycle).",
        ]
    else:
        notes = _zero_communication_notes(weight_dtype, zero)
    lines = [
        f"Communication per optimizer step: sizes in MiB of the whole tensors reduced or gathered. On a ring each GPU "
        f"sends about 2(N-1)/N = {2 * (gpus - 1) / gpus:.2f} times that for an all-reduce, "
        f"(N-1)/N = {(gpus - 1) / gpus:.2f} times for a reduce-scatter or an all-gather.",
        f"Importance gradient of the measuring group (fp32 all-reduce, one group per step in async mode): a decoder "
        f"layer {4 * layer_weights:,} bytes ({layer_weights:,} weights x 4 B){head}.",
        *notes,
        "",
    ]
    keys = ["importance_layer", "importance_mean", "block_gradients", "block_allgather"]
    headers = ["importance, layer", "importance, mean", "block grads", "block all-gather"]
    if zero >= 3 or fsdp:
        keys += ["weight_allgather", "measuring_weights"]
        headers += ["weight all-gather", "measuring weights"]
    keys.append("total_mean")
    headers.append("total, mean")
    lines += ["| p | p_o | " + " | ".join(headers) + " |", "|---|---|" + "---:|" * len(headers)]
    for p_o in output_rank_factors:
        for p in rank_factors:
            c = communication(shape, p, p_o, weight_dtype, zero, fsdp)
            lines.append(
                f"| {format_fraction(p)} | {format_fraction(p_o)} | "
                + " | ".join(f"{c[k] / MIB:.1f}" for k in keys)
                + " |"
            )
    return lines


def _zero_communication_notes(weight_dtype: str, zero: int) -> list[str]:
    """What the block-gradient and weight columns mean under DDP or ZeRO stage ``zero``."""
    block_reduce = {
        0: "DDP all-reduce",
        1: "ZeRO-1 reduce-scatter",
        2: "ZeRO-2 reduce-scatter, at every micro-batch: multiply by the gradient accumulation steps",
        3: "ZeRO-3 reduce-scatter, at every micro-batch: multiply by the gradient accumulation steps",
    }[zero]
    gather = f"; under ZeRO the updated blocks are then all-gathered in {weight_dtype}" if zero else ""
    zero3 = (
        [
            f"ZeRO-3 weight all-gathers in {weight_dtype}: every weight for the forward and again for the backward of "
            "each micro-batch (multiply by the accumulation steps; gradient checkpointing adds a third), and the "
            "measuring group's weights once per step for its importance (mean over a cycle)."
        ]
        if zero >= 3
        else []
    )
    return [f"Block gradients in {gradient_dtype(weight_dtype, zero)} ({block_reduce}){gather}.", *zero3]


def _gpu_count(text: str) -> int:
    try:
        gpus = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if gpus < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 GPU, got {gpus}")
    return gpus


def _zero_stage(text: str) -> int:
    try:
        stage = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or 3, got {text!r}") from None
    if stage not in ZERO_STAGES:
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or 3, got {stage}")
    return stage


def main(argv: list[str] | None = None) -> int:
    """``losia-factory estimate``."""
    parser = argparse.ArgumentParser(prog="losia-factory estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama2-7b", help=f"preset ({', '.join(PRESETS)}) or a config.json path")
    parser.add_argument("--rank-factor", default="1/16,1/8,1/4,1/2", help="p values, e.g. 1/8 or 1/16,1/8")
    parser.add_argument("--output-rank-factor", default="1/8,1", help="p_o values, e.g. 1/8 or 0")
    parser.add_argument("--weight-dtype", default="bfloat16", choices=tuple(DTYPE_BYTES))
    parser.add_argument("--importance-dtype", default="float32", choices=tuple(DTYPE_BYTES))
    parser.add_argument(
        "--gpus", type=_gpu_count, default=1, help="data-parallel ranks (default 1); memory is then per GPU"
    )
    parser.add_argument(
        "--zero",
        type=_zero_stage,
        default=0,
        metavar="{0,1,2,3}",
        help="DeepSpeed ZeRO stage (default 0: plain DDP); 1 partitions masters and moments, 2 also block gradients, "
        "3 also the backbone weights",
    )
    parser.add_argument(
        "--fsdp",
        action="store_true",
        help="FSDP2 (fully_shard) instead of DeepSpeed: weights, blocks, moments and block gradients split by rows",
    )
    args = parser.parse_args(argv)
    try:
        shape = load_shape(args.model)
        text = report(
            shape,
            parse_fractions(args.rank_factor),
            parse_fractions(args.output_rank_factor),
            args.weight_dtype,
            args.importance_dtype,
            args.gpus,
            args.zero,
            args.fsdp,
        )
    except ValueError as err:
        parser.error(str(err))
    print(text)
    return 0
