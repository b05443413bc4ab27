"""``python -m fsrf`` runs the command line (see :mod:`fsrf.cli`)."""

import sys

from fsrf.cli import main

if __name__ == "__main__":
    sys.exit(main())
