"""``python -m cheers.evaluation BENCHMARK ...``: the ``cheers eval`` command on its own."""

from __future__ import annotations

import sys

from cheers.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
