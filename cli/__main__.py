"""``python -m pdeserve.cli ...`` (and ``torchrun -m pdeserve.cli train ...``): the ``pdeserve`` command."""

import sys

from pdeserve.cli import main

if __name__ == "__main__":
    sys.exit(main())
