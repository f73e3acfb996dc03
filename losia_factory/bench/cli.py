"""``losia-factory benchmark`` (also ``python scripts/benchmark.py`` and ``python -m losia_factory.bench``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..fractions import parse_fractions
from .measure import activation_sweep, measure, measure_interleaved, run
from .methods import METHODS
from .report import markdown_table, plot, ratios
from .spec import QUICK, BenchSpec

INT_OPTIONS = (
    "hidden_size",
    "num_layers",
    "intermediate_size",
    "num_heads",
    "num_kv_heads",
    "vocab_size",
    "batch_size",
    "seq_len",
    "steps",
    "warmup",
    "time_slot",
    "threads",
)
DTYPES = ("float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser (the worker options are hidden)."""
    parser = argparse.ArgumentParser(
        prog="losia-factory benchmark",
        description="Training cost of LoSiA / LoSiA-Pro next to LoRA, DoRA, PiLoRA, GaLore, full fine-tuning and "
        "the floor (frozen backbone) on a random LLaMA-shaped model.",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-interleaved", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small model and few steps (smoke check, < 60 s)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every method in this process (default with --quick; peak memory is then not per method)",
    )
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="take the latency columns from one process that steps all methods in turn (default: on, except with "
        "--quick or --in-process)",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--gradient-checkpointing", choices=("both", "on", "off"), default="both")
    parser.add_argument("--json", help="write the report as JSON to this path")
    parser.add_argument("--markdown", help="write the table as markdown to this path")
    parser.add_argument("--plot", help="write a bar chart (latency split and memory) to this PNG path")
    parser.add_argument(
        "--activation-sweep",
        default="",
        help="also measure saved activations of LoSiA-Pro at these rank factors, e.g. 1/16,1/8,1/4,1/2",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="float32 (default) or bfloat16 (GPU)")
    for name in INT_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    for name in ("rank_factor", "output_rank_factor"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None)
    return parser


def _check(parser: argparse.ArgumentParser, spec: BenchSpec, methods: list[str], sweep: str) -> list[float]:
    """Refuse bad settings before any model is built; returns the parsed activation-sweep factors."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"--methods: unknown {unknown or 'none given'}; choose from {', '.join(METHODS)}")
    if spec.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {spec.device}: this torch ({torch.__version__}) sees no CUDA device; use cpu")
    elif spec.device != "cpu":
        parser.error(f"--device must be cpu or cuda[:N], got {spec.device!r}")
    small = {k: getattr(spec, k) for k in INT_OPTIONS if k not in ("warmup", "threads") and getattr(spec, k) < 1}
    if small or spec.warmup < 0 or spec.threads < 0:
        parser.error(f"sizes and steps must be >= 1 (warmup, threads >= 0), got {small or vars(spec)}")
    if spec.hidden_size % spec.num_heads or spec.num_heads % spec.num_kv_heads:
        parser.error("--hidden-size must be a multiple of --num-heads, and --num-heads of --num-kv-heads")
    try:
        return parse_fractions(sweep)
    except ValueError as err:
        parser.error(f"--activation-sweep: {err}")


def main(argv: list[str] | None = None) -> int:
    """Command line of the benchmark; exits 1 when a method failed (its error is in the report)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.worker or args.worker_interleaved:
        spec = BenchSpec(**json.loads(args.spec))
        checkpointing = args.gradient_checkpointing == "on"
        if args.worker:
            result = measure(args.worker, spec, checkpointing)
        else:
            result = measure_interleaved(args.worker_interleaved.split(","), spec, checkpointing)
        print(json.dumps(result))
        return 0

    spec = QUICK if args.quick else BenchSpec()
    overrides = {k: v for k, v in vars(args).items() if k in BenchSpec.__dataclass_fields__ and v is not None}
    spec = replace(spec, **overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    factors = _check(parser, spec, methods, args.activation_sweep)
    isolated = not (args.in_process or args.quick)
    interleave = isolated if args.interleave is None else args.interleave
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.gradient_checkpointing]
    print(
        f"benchmark on {spec.device} ({spec.dtype}): hidden {spec.hidden_size}, {spec.num_layers} layers, vocab "
        f"{spec.vocab_size}, batch {spec.batch_size} x {spec.seq_len}, {spec.steps} measured steps after "
        f"{spec.warmup}",
        flush=True,
    )
    report = run(spec, methods, modes, isolated=isolated, interleave=interleave)
    report["ratios"] = ratios(report)
    if factors:
        report["activation_sweep_mb"] = activation_sweep(spec, factors)
    print()
    print(markdown_table(report))
    print()
    for key, value in report["ratios"].items():
        print(f"{key}: {value:.3f}")
    for key, value in report.get("activation_sweep_mb", {}).items():
        print(f"saved activations, {key}: {value:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(report) + "\n")
    if args.plot and report["methods"]:
        plot(report, args.plot)
    if report["failed"]:
        print(f"failed: {', '.join(report['failed'])} (errors in the report)", file=sys.stderr)
        return 1
    return 0
