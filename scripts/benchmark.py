"""Training-cost benchmark (same as `losia-factory benchmark`); see `--help`."""

import sys

from losia_factory.bench import main

if __name__ == "__main__":
    sys.exit(main())
