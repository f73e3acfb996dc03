"""LoSiA memory estimator (same as `losia-factory estimate`); see `--help`."""

import sys

from losia_factory.estimate import main

if __name__ == "__main__":
    sys.exit(main())
