"""The ``pdeserve`` and ``datagen`` scripts: the top-level parsers, and running what they parse."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pdeserve.cli.datagen import EXAMPLES as DATAGEN_EXAMPLES
from pdeserve.cli.datagen import add_datagen_commands
from pdeserve.cli.eval import add_eval_command
from pdeserve.cli.models import add_models_command
from pdeserve.cli.parsing import CliParser, Commands, run_command
from pdeserve.cli.retrain import add_retrain_command
from pdeserve.cli.serve import add_serve_commands
from pdeserve.cli.solve import add_solve_command
from pdeserve.cli.train import add_train_command


def build_parser() -> CliParser:
    """The ``pdeserve`` parser with every command."""
    parser = CliParser(prog="pdeserve", description="Neural-operator PDE solver service.")
    commands = Commands(parser, dest="command")
    datagen = commands.add(
        "datagen", help="generate PDE datasets with classical solvers", epilog=DATAGEN_EXAMPLES
    )
    add_datagen_commands(datagen)
    add_train_command(commands)
    add_retrain_command(commands)
    add_eval_command(commands)
    add_models_command(commands)
    add_serve_commands(commands)
    add_solve_command(commands)
    return parser


def build_datagen_parser() -> CliParser:
    """The ``datagen`` script's parser: the subcommands of ``pdeserve datagen``."""
    parser = CliParser(
        prog="datagen",
        description="Generate PDE datasets with classical solvers (the same as `pdeserve datagen`).",
        epilog=DATAGEN_EXAMPLES,
    )
    add_datagen_commands(parser)
    return parser


def _run(prog: str, parser: CliParser, argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = [prog, *argv]  # recorded in the lineage of what the command publishes
    return run_command(prog, args.func, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pdeserve`` script."""
    return _run("pdeserve", build_parser(), argv)


def datagen_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``datagen`` script, equal to ``pdeserve datagen`` (``retrain`` included)."""
    return _run("datagen", build_datagen_parser(), argv)
