"""``losia-factory`` command line: helper commands that are not part of ``llamafactory-cli``."""

from __future__ import annotations

import argparse
import sys


def _demo_assets(args: argparse.Namespace) -> int:
    from .demo import build_assets

    paths = build_assets(args.out, hidden_size=args.hidden_size, num_layers=args.num_layers)
    print(f"tiny LLaMA (random weights, own tokenizer): {paths['model']}")
    print(f"dataset 'demo_arithmetic' and dataset_info.json: {paths['data']}")
    return 0


def _pilora_plot(args: argparse.Namespace) -> int:
    import os

    from .pilora.plot import plot_partition, summary_markdown

    out = args.out or os.path.join(args.folder, "pilora_partition.png")
    try:
        rows = plot_partition(args.folder, out, max_layers=args.max_layers)
    except (FileNotFoundError, ValueError, ImportError) as err:  # wrong folder or no matplotlib: say so, no traceback
        print(f"losia-factory pilora-plot: {err}", file=sys.stderr)
        return 1
    print(summary_markdown(rows), end="")
    print(f"figure: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``losia-factory`` console script."""
    parser = argparse.ArgumentParser(prog="losia-factory", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo-assets", help="build a tiny offline LLaMA and the bundled demo dataset")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.add_argument("--hidden-size", type=int, default=128)
    demo.add_argument("--num-layers", type=int, default=4)
    demo.set_defaults(func=_demo_assets)
    plot = commands.add_parser("pilora-plot", help="hit counts and partition of a PiLoRA run, per layer (PNG + table)")
    plot.add_argument("folder", help="output folder of a finetuning_type: pilora run")
    plot.add_argument("--out", default=None, help="PNG path (default: FOLDER/pilora_partition.png)")
    plot.add_argument(
        "--max-layers", type=int, default=None, help="plot only the first N layers (grouped by module type)"
    )
    plot.set_defaults(func=_pilora_plot)
    commands.add_parser("benchmark", help="training cost of LoSiA vs LoRA, DoRA, GaLore, full, floor", add_help=False)
    commands.add_parser("estimate", help="trainable parameters and memory from a model config", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "benchmark":
        from .bench import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "estimate":
        from .estimate import main as estimate_main

        return estimate_main(argv[1:])
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
