"""``python -m bench.perf``: see the package docstring."""

import sys

from bench.perf.cli import main

sys.exit(main())
