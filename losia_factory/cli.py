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


def _analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze
    from .analysis.run import RunFilesError
    from .model_files import NotAFullModelError

    figures = None if args.figures is None else [f.strip() for f in args.figures.split(",") if f.strip()]
    svd_layers = None if args.svd_layers is None else [int(v) for v in args.svd_layers.split(",") if v.strip()]
    try:
        results = analyze(
            args.run_dir,
            out=args.out,
            base=args.base,
            compare=args.compare,
            figures=figures,
            layer=args.layer,
            probe=args.probe,
            probe_samples=args.probe_samples,
            top=args.top,
            svd_layers=svd_layers,
        )
    except (RunFilesError, NotAFullModelError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"losia-factory analyze: {err}", file=sys.stderr)
        return 1
    import os

    out = args.out or os.path.join(args.run_dir, "analysis")
    for figure, entry in results["figures"].items():
        seconds = results["seconds"][figure]
        print(f"{figure:<11} {os.path.join(out, entry['file'])}  ({seconds:.1f} s; needs {entry['needs']})")
    for figure, reason in results["skipped"].items():
        print(f"{figure:<11} skipped: {reason}")
    print(f"report: {os.path.join(out, 'analysis.md')}  numbers: {os.path.join(out, 'analysis.json')}")
    return 0


def _delta(args: argparse.Namespace) -> int:
    from .delta import BaseMismatchError, apply_delta, export_delta
    from .model_files import NotAFullModelError

    try:
        if args.delta_command == "export":
            manifest = export_delta(args.run_dir, args.base, args.out)
            sizes = manifest["sizes"]
            print(
                f"delta: {args.out} ({sizes['delta_bytes'] / 2**20:.2f} MiB for {manifest['changed_entries']:,} "
                f"changed of {manifest['total_entries']:,} entries; full model {sizes['full_bytes'] / 2**20:.2f} MiB, "
                f"ratio {sizes['ratio']:.3f}); base {manifest['base_model']} sha256 {manifest['base_sha256'][:16]}..."
            )
        else:
            result = apply_delta(args.delta_dir, args.base, args.out)
            print(f"rebuilt {result['out']} ({result['tensors']} tensors from the delta; sha256 verified)")
    except (BaseMismatchError, NotAFullModelError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"losia-factory delta {args.delta_command}: {err}", file=sys.stderr)
        return 1
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
    analysis = commands.add_parser(
        "analyze", help="figures of what a LoSiA run did (subnets, frequency, coverage, spectra, rates, gradient)"
    )
    analysis.add_argument("run_dir", metavar="RUN_DIR", help="output folder of a finetuning_type: losia run")
    analysis.add_argument("--base", default=None, help="base model folder (default: the one the run recorded)")
    analysis.add_argument("--out", default=None, help="output folder (default: RUN_DIR/analysis)")
    analysis.add_argument("--compare", default=None, help="a second run on the same base (LoRA adapter or full model)")
    analysis.add_argument(
        "--figures", default=None, help="comma-separated subset of subnets,frequency,lr,coverage,similarity,gradient"
    )
    analysis.add_argument("--layer", default=None, help="layer of the subnet-position figure (default: a middle one)")
    analysis.add_argument("--probe", default=None, help="probe data for the gradient table (default: demo dataset)")
    analysis.add_argument("--probe-samples", type=int, default=16, help="records in the probe batch (default 16)")
    analysis.add_argument("--top", type=int, default=500, help="singular vectors compared per weight (default 500)")
    analysis.add_argument("--svd-layers", default=None, help="decoder layers of the spectra figure, e.g. 0,15,31")
    analysis.set_defaults(func=_analyze)
    delta = commands.add_parser("delta", help="sparse delta of a full-model run against its base: export, apply")
    delta_commands = delta.add_subparsers(dest="delta_command", required=True)
    export = delta_commands.add_parser("export", help="write the changed entries of RUN_DIR against --base")
    export.add_argument("run_dir", metavar="RUN_DIR", help="output folder of a full-model run")
    export.add_argument("--base", required=True, help="the base model folder the run started from")
    export.add_argument("--out", required=True, help="new folder for the delta")
    apply = delta_commands.add_parser("apply", help="rebuild the full model from --base and a delta, bit-exactly")
    apply.add_argument("delta_dir", metavar="DELTA", help="folder written by `delta export`")
    apply.add_argument("--base", required=True, help="the base model folder (checked against the delta)")
    apply.add_argument("--out", required=True, help="new folder for the rebuilt model")
    delta.set_defaults(func=_delta)
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
