"""``python -m losia_factory.bench.gpu_summary``: the markdown summary of one ``scripts/gpu_check.sh`` run.

Reads what the script left in its output folder (``sections.tsv``, ``bench_1b.json``, ``bench_7b.json``,
``smoke_results.json``, ``deepspeed_losia_log.jsonl``) and prints docs/benchmarks_gpu.md: the date, each section's
outcome, the benchmark tables and the GPU targets (LoSiA-Pro <= 0.70x LoRA's time at matched rank and <= 1.05x the
floor, peak memory <= LoRA's).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from .report import latency, markdown_table

TARGETS = (("lora", 0.70, "LoRA at matched rank (paper Table 16: 0.72x)"), ("floor", 1.05, "the floor"))


def targets_table(report: dict[str, Any]) -> list[str]:
    """LoSiA-Pro's latency and memory against the GPU targets, per gradient-checkpointing setting."""
    lines = ["| setting | LoSiA-Pro against | target | measured | met? |", "|---|---|---:|---:|---|"]
    methods = report["methods"]
    for suffix, setting in (("", "no checkpointing"), ("_gc", "gradient checkpointing")):
        pro = methods.get("losia_pro" + suffix)
        if pro is None:
            continue
        for other, bound, label in TARGETS:
            ref = methods.get(other + suffix)
            if ref is not None:
                ratio = latency(pro) / latency(ref)
                met = _yes(ratio <= bound)
                lines.append(f"| {setting} | time of {label} | <= {bound:.2f}x | {ratio:.3f}x | {met} |")
        lora = methods.get("lora" + suffix)
        if lora is not None:
            ratio = pro["peak_mem_mb"] / lora["peak_mem_mb"]
            lines.append(f"| {setting} | peak memory of LoRA | <= 1.00x | {ratio:.3f}x | {_yes(ratio <= 1.0)} |")
    return lines


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def bench_section(title: str, path: Path) -> list[str]:
    """Heading, settings, table and targets of one benchmark report (nothing when the file is missing)."""
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    model = report["model"]
    return [
        f"## {title}",
        "",
        f"{report['device']}, torch {report['torch']}, {model['dtype']}; LLaMA shape with random weights, "
        f"{model['parameters'] / 1e6:.1f}M parameters (hidden {model['hidden_size']}, {model['num_layers']} layers, "
        f"MLP {model['intermediate_size']}, {model['num_heads']} heads / {model['num_kv_heads']} KV heads, vocabulary "
        f"{model['vocab_size']}); batch {model['batch_size']} x {model['seq_len']} tokens; median of {model['steps']} "
        f"steps after {model['warmup']}; each method in its own process. LoSiA: p = {model['rank_factor']:g}, "
        f"p_o = {model['output_rank_factor']:g}, T = {model['time_slot']}; `cycle us/token` adds the output layer's "
        "measuring slot and the reselections, averaged over a cycle. LoRA/DoRA: rank hidden/64. Peak memory: "
        "`torch.cuda.max_memory_allocated` (process RSS on a CPU).",
        "",
        markdown_table(report),
        "",
        *targets_table(report),
        "",
    ]


def summary(out: Path, sections: Path, dry_run: bool) -> str:
    """The markdown text (see the module docstring)."""
    text = sections.read_text() if sections.exists() else ""
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    lines = [
        "# GPU evidence: `scripts/gpu_check.sh`",
        "",
        f"Run on {datetime.date.today().isoformat()}: `bash scripts/gpu_check.sh --out DIR"
        f"{' --dry-run' if dry_run else ''}`.",
        "",
    ]
    if dry_run:
        lines += ["**Dry run on the CPU with tiny sizes: these figures test the script; they are not evidence.**", ""]
    lines += ["| section | outcome | seconds | note |", "|---|---|---:|---|"]
    lines += [f"| {' | '.join([*row, '', '', '', ''][:4])} |" for row in rows]
    lines.append("")
    lines += bench_section("About 1B parameters (TinyLlama's shape)", out / "bench_1b.json")
    lines += bench_section("LLaMA-2 7B's layer shape (four decoder layers)", out / "bench_7b.json")
    smoke = out / "smoke_results.json"
    if smoke.exists():
        results = json.loads(smoke.read_text()).get("runs", {})  # the harness's results.json
        lines += ["## Real-model smoke run (quality harness, LoSiA-Pro)", ""]
        lines += ["| run | accuracy % | answer NLL | forgetting | train s |", "|---|---:|---:|---:|---:|"]
        for key, entry in results.items():
            if isinstance(entry, dict) and "accuracy" in entry:
                lines.append(
                    f"| {key} | {entry['accuracy']:.1f} | {entry['answer_nll']:.3f} | "
                    f"{entry.get('forgetting', 0.0):+.3f} | {entry.get('train_s') or 0.0:.0f} |"
                )
        lines.append("")
    log = out / "deepspeed_losia_log.jsonl"
    if log.exists():
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        reselections = [e for e in events if e.get("event") == "reselect"]
        steps = max((e.get("step", 0) for e in events), default=0)
        groups = sorted({str(g) for e in reselections for g in e.get("groups", [])})
        lines += [
            "## DeepSpeed ZeRO-2, one process",
            "",
            f"Last logged optimizer step {steps}; {len(reselections)} reselections (groups {', '.join(groups)}).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the summary of the run in ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m losia_factory.bench.gpu_summary", description=__doc__)
    parser.add_argument("--out", required=True, help="the output folder of scripts/gpu_check.sh")
    parser.add_argument("--sections", help="its sections.tsv (default: OUT/sections.tsv)")
    parser.add_argument("--dry-run", default="0", choices=("0", "1"), help="1: the run was a CPU dry run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not out.is_dir():
        parser.error(f"--out {out} is not a folder")
    print(summary(out, Path(args.sections) if args.sections else out / "sections.tsv", args.dry_run == "1"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
