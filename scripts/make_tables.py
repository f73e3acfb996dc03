"""Render the papers' tables with our numbers beside them, and plot training-loss curves.

Examples:
    python scripts/make_tables.py                                       # the paper tables alone
    python scripts/make_tables.py --results saves/paper/results.json --tables losia_t1,losia_t2 --out results.md
    python scripts/make_tables.py --loss-plot loss.png --run LoRA=saves/paper/losia_t1/llama2_7b-metamathqa-lora \
        --run LoSiA=saves/paper/losia_t1/llama2_7b-metamathqa-losia
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from losia_factory.reproduce.tables import load_ours, load_paper_results, plot_loss_curves, render_all


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, help="our collected results (saves/paper/results.json)")
    p.add_argument("--tables", help="comma-separated table ids (default: all)")
    p.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    p.add_argument("--loss-plot", type=Path, help="also plot training loss curves to this PNG")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=DIR", help="a training run for --loss-plot")
    p.add_argument("--smoothing", type=float, default=0.6, help="EMA weight of the loss curves (default 0.6)")
    args = p.parse_args(argv)

    known = list(load_paper_results())
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    unknown = [t for t in tables or [] if t not in known]
    if unknown:
        p.error(f"--tables: unknown {', '.join(unknown)}; choose from {', '.join(known)}.")
    if args.results is not None and not args.results.is_file():
        p.error(f"--results: {args.results} does not exist (scripts/reproduce.py writes saves/paper/results.json).")
    ours = load_ours(args.results) if args.results else None
    text = render_all(ours, tables)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    if args.loss_plot:
        runs = {}
        for item in args.run:
            label, sep, path = item.partition("=")
            if not sep or not label or not path:
                p.error(f"--run expects LABEL=DIR, got {item!r}.")
            runs[label] = path
        try:
            print(f"wrote {plot_loss_curves(runs, args.loss_plot, args.smoothing)}")
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
