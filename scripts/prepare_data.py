"""Prepare the papers' training sets for LLaMA-Factory: download, sample (fixed seed), convert, record a manifest.

Examples:
    python scripts/prepare_data.py --dataset metamathqa:50k --dataset hellaswag
    python scripts/prepare_data.py --dataset metamathqa:50000 --source metamathqa=/mirror/MetaMathQA.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from losia_factory.reproduce.data import SOURCES, DataPreparationError, prepare_dataset


def _count(text: str) -> int:
    text = text.lower().replace("_", "")
    value = int(text[:-1]) * 1000 if text.endswith("k") else int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in SOURCES or not value:
            raise SystemExit(f"{flag} expects KEY=VALUE with KEY one of {', '.join(SOURCES)}; got {item!r}.")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", action="append", required=True, metavar="KEY[:N]",
                   help=f"training set and sample count (50k or 50000); keys: {', '.join(SOURCES)}")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=Path("data/paper"), help="output folder (default data/paper)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed (default 42)")
    p.add_argument("--source", action="append", default=[], metavar="KEY=PATH", help="local copy in the own schema")
    p.add_argument("--revision", action="append", default=[], metavar="KEY=REV", help="hub revision to load")
    p.add_argument("--name", help="dataset name to write (one --dataset only; default KEY_50k style)")
    args = p.parse_args(argv)
    sources, revisions = _pairs(args.source, "--source"), _pairs(args.revision, "--revision")
    jobs = []
    for item in args.dataset:
        key, _, count = item.partition(":")
        if key not in SOURCES:
            p.error(f"--dataset {item}: unknown key {key!r}; choose from {', '.join(SOURCES)}.")
        try:
            jobs.append((key, _count(count) if count else None))
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
            )
            print(f"{key}: {entry['rows']} rows, sha256 {entry['sha256'][:12]}, revision {entry['revision']}")
    except DataPreparationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
