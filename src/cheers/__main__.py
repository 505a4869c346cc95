"""``python -m cheers``: the same command line as the ``cheers`` script."""

import sys

from cheers.cli import main

if __name__ == "__main__":
    sys.exit(main())
