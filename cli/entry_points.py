"""The ``pdeserve`` and ``datagen`` scripts: the top-level parsers, and running what they parse."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pdeserve.cli.parsing import CliParser, Commands, add_needs_server_extra, run_command
from pdeserve.cli.solve import add_solve_command

# Every command but ``solve`` builds its options from modules of the server extra (the PDE families,
# the serving config); a client-only install has ``solve`` and, in their place, commands that say so.
SERVER_COMMANDS = ("datagen", "train", "retrain", "eval", "models", "serve", "serve-config")


def build_parser() -> CliParser:
    """The ``pdeserve`` parser with every command."""
    try:
        parser, commands = _with_server_commands()
    except ModuleNotFoundError as exc:
        if (exc.name or "pdeserve").startswith("pdeserve"):
            raise  # a module of pdeserve itself: a broken install, not a missing extra
        parser, commands = _top_parser()
        for name in SERVER_COMMANDS:
            add_needs_server_extra(commands, name, exc)
    add_solve_command(commands)
    return parser


def _top_parser() -> tuple[CliParser, Commands]:
    parser = CliParser(prog="pdeserve", description="Neural-operator PDE solver service.")
    return parser, Commands(parser, dest="command")


def _with_server_commands() -> tuple[CliParser, Commands]:
    """The ``pdeserve`` parser with every command of the server extra; ``ModuleNotFoundError`` where it
    is not installed."""
    from pdeserve.cli.datagen import EXAMPLES as DATAGEN_EXAMPLES
    from pdeserve.cli.datagen import add_datagen_commands
    from pdeserve.cli.eval import add_eval_command
    from pdeserve.cli.models import add_models_command
    from pdeserve.cli.retrain import add_retrain_command
    from pdeserve.cli.serve import add_serve_commands
    from pdeserve.cli.train import add_train_command

    parser, commands = _top_parser()
    datagen = commands.add(
        "datagen", help="generate PDE datasets with classical solvers", epilog=DATAGEN_EXAMPLES
    )
    add_datagen_commands(datagen)
    add_train_command(commands)
    add_retrain_command(commands)
    add_eval_command(commands)
    add_models_command(commands)
    add_serve_commands(commands)
    return parser, commands


def build_datagen_parser() -> CliParser:
    """The ``datagen`` script's parser: the subcommands of ``pdeserve datagen``."""
    from pdeserve.cli.datagen import EXAMPLES as DATAGEN_EXAMPLES
    from pdeserve.cli.datagen import add_datagen_commands

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
    try:
        parser = build_datagen_parser()
    except ModuleNotFoundError as exc:
        if (exc.name or "pdeserve").startswith("pdeserve"):
            raise
        print(
            f"datagen: error: needs pdeserve's server extra ({exc.name} is not installed): "
            "pip install 'pdeserve[server]'",
            file=sys.stderr,
        )
        return 1
    return _run("datagen", parser, argv)
