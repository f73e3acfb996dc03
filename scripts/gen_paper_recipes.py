"""Write recipes/paper/ from losia_factory/reproduce/settings.py (``--check``: fail if the committed files differ)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from losia_factory.reproduce.recipes import check_recipes, write_recipes

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare the committed recipes with the generator")
    args = parser.parse_args()
    if args.check:
        problems = check_recipes(ROOT)
        for problem in problems:
            print(problem)
        print(f"{len(problems)} recipe(s) differ from the generator" if problems else "recipes/paper is up to date")
        return 1 if problems else 0
    paths = write_recipes(ROOT)
    print(f"wrote {len(paths)} recipes under recipes/paper/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
