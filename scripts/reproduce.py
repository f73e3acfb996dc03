"""Reproduce one table of the LoSiA (or PiLoRA) paper: prepare -> train -> evaluate -> collect, resumable.

Examples:
    python scripts/reproduce.py losia_t1 --dry-run                       # every command, nothing run
    python scripts/reproduce.py losia_t1 --model llama2_7b --dataset metamathqa
    python scripts/reproduce.py losia_t13                                # continual learning, stages in order
    python scripts/reproduce.py losia_t3 --list                          # the experiments of a table
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from losia_factory.reproduce.data import DataPreparationError
from losia_factory.reproduce.evaluation import EvaluationError
from losia_factory.reproduce.pipeline import Pipeline, PipelineError, PipelineOptions, select
from losia_factory.reproduce.settings import TABLES

ROOT = Path(__file__).resolve().parents[1]


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {item!r}.")
        out[key] = value
    return out


def _names(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=TABLES, help="paper table: losia_t1..t13 (LoSiA paper), pilora_t1 (PiLoRA paper)")
    p.add_argument("--dry-run", action="store_true", help="print every command (prepare, train, merge, evaluate)")
    p.add_argument("--list", action="store_true", help="list the table's experiments and their state, then exit")
    p.add_argument("--only", action="append", default=[], help="experiment name(s), comma separated")
    p.add_argument("--model", action="append", default=[], help="keep experiments on these model keys")
    p.add_argument("--dataset", action="append", default=[], help="keep experiments training on these data keys")
    p.add_argument("--model-path", action="append", default=[], metavar="KEY=PATH", help="replace a backbone")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra llamafactory-cli argument")
    p.add_argument("--data-source", action="append", default=[], metavar="KEY=PATH", help="local copy of a dataset")
    p.add_argument("--max-samples", type=int, help="cap the samples drawn per training set (smoke runs)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed of the training sets (default 42)")
    p.add_argument("--root", type=Path, default=Path("."), help="where data/paper and saves/paper live (default .)")
    p.add_argument("--limit", type=float, help="lm-eval --limit (smoke runs)")
    p.add_argument("--batch-size", default="auto", help="lm-eval batch size (default auto)")
    p.add_argument("--device", help="lm-eval device, e.g. cuda:0 or cpu")
    p.add_argument("--dtype", default="bfloat16", help="model dtype for evaluation (default bfloat16)")
    p.add_argument(
        "--task", action="append", default=[], metavar="COLUMN=TASK", help="replace a column's lm-eval task"
    )
    p.add_argument("--include-path", action="append", default=[], help="extra lm-eval task folder")
    p.add_argument("--force", action="store_true", help="redo stages already marked done")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_samples is not None and args.max_samples < 1:
        raise SystemExit("--max-samples must be >= 1.")
    options = PipelineOptions(
        root=args.root,
        recipes_root=ROOT,
        only=_names(args.only),
        models=_names(args.model),
        datasets=_names(args.dataset),
        model_paths=_pairs(args.model_path, "--model-path"),
        train_overrides=_pairs(args.set, "--set"),
        data_sources=_pairs(args.data_source, "--data-source"),
        max_samples=args.max_samples,
        seed=args.seed,
        eval_limit=args.limit,
        eval_batch_size=args.batch_size,
        eval_device=args.device,
        eval_dtype=args.dtype,
        task_map=_pairs(args.task, "--task"),
        include_paths=tuple(args.include_path),
        force=args.force,
        dry_run=args.dry_run,
    )
    try:
        if args.list:
            pipeline = Pipeline(args.table, options)
            for exp in select(args.table, options):
                state = ",".join(s for s in ("train", "merge") if pipeline.done(exp, s)) or "-"
                print(f"{exp.name:55s} {exp.recipe_path:90s} done: {state}")
            return 0
        Pipeline(args.table, options).run()
    except (PipelineError, DataPreparationError, EvaluationError) as err:
        print(f"error: {err}", file=sys.stderr)
        print("Finished stages are kept; run the same command again to continue.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
