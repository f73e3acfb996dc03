"""Prepare the papers' training sets for LLaMA-Factory: load, sample (fixed seed), convert, record a manifest.

Writes <data-dir>/<name>.json (alpaca format), merges <data-dir>/dataset_info.json and <data-dir>/manifest.json;
a set already prepared with the same settings is skipped. Exit status 2 when a set cannot be prepared.

Examples:
    python scripts/prepare_data.py --dataset metamathqa:50k --dataset hellaswag
    python scripts/prepare_data.py --dataset metamathqa:30k --dataset metamathqa:50k --dataset metamathqa:70k
    python scripts/prepare_data.py --dataset boolq --source boolq=/mirror/super_glue/boolq/train.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from losia_factory.reproduce.data import SOURCES, DataPreparationError, prepare_dataset


def parse_count(text: str) -> int:
    """``50000``, ``50_000`` or ``50k`` -> 50000."""
    text = text.strip().lower().replace("_", "")
    value = int(text[:-1]) * 1000 if text.endswith("k") else int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    keys = ", ".join(SOURCES)
    p.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="KEY[:N]",
        help=f"training set, optionally N random rows (50000 or 50k); repeatable. Keys: {keys}",
    )
    p.add_argument("--data-dir", type=Path, default=Path("data/paper"), help="output folder (default data/paper)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed (default 42)")
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="use a local copy of KEY's split, in the dataset's own schema, instead of the hub",
    )
    p.add_argument(
        "--revision",
        action="append",
        default=[],
        metavar="KEY=REV",
        help="hub revision (branch, tag or commit) of KEY's dataset",
    )
    p.add_argument("--name", help="dataset name to write (one --dataset only; default KEY_50k / KEY)")
    p.add_argument("--force", action="store_true", help="rebuild even when the manifest says a set is up to date")
    return p


def _pairs(p: argparse.ArgumentParser, values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not value:
            p.error(f"{flag} {item}: expected KEY=VALUE.")
        if key not in SOURCES:
            p.error(f"{flag} {item}: unknown key {key!r}; choose from {', '.join(SOURCES)}.")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    sources = _pairs(p, args.source, "--source")
    revisions = _pairs(p, args.revision, "--revision")
    jobs: list[tuple[str, int | None]] = []
    for item in args.dataset:
        key, _, count = item.partition(":")
        if key not in SOURCES:
            p.error(f"--dataset {item}: unknown key {key!r}; choose from {', '.join(SOURCES)}.")
        try:
            jobs.append((key, parse_count(count) if count else None))
        except ValueError:
            p.error(f"--dataset {item}: the sample count must be a positive integer such as 50000 or 50k.")
    if args.name and len(jobs) != 1:
        p.error("--name needs exactly one --dataset.")
    try:
        for key, samples in jobs:
            entry = prepare_dataset(
                key,
                args.data_dir,
                samples,
                args.seed,
                source=sources.get(key),
                revision=revisions.get(key),
                name=args.name,
                force=args.force,
            )
            print(
                f"{entry['name']}: {entry['rows']} rows of {entry['source_rows']} ({key}, seed {entry['seed']}), "
                f"revision {entry['revision']}, sha256 {entry['sha256'][:12]}",
                flush=True,
            )
    except DataPreparationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
