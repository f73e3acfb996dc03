"""``python -m losia_factory.bench``: the benchmark's command line (and its worker processes)."""

import sys

from .cli import main

sys.exit(main())
