"""The ``pdeserve`` command line (and the ``datagen`` script), one module per command group.

This package is the composition root: it may import every layer, but imports torch and Ray only
inside the commands that need them, so ``--help`` and ``datagen list`` stay fast.
"""

from pdeserve.cli.entry_points import build_parser, datagen_main, main

__all__ = ["build_parser", "datagen_main", "main"]
