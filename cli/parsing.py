"""What every ``pdeserve`` command shares: examples kept in ``--help``, one-line errors, subcommand sets."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from pdeserve.operators.errors import FamilyUnavailableError

# Failures a command reports as one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, LookupError, OSError, RuntimeError, FamilyUnavailableError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; defaults shown after each option's help (not for flags and None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Commands:
    """The subcommands of one parser; each is a parser of the same class (so a ``CliParser`` too).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command whose subcommands these are; one of them must be given.
    dest : str
        The attribute of the parsed arguments that names the subcommand given.
    """

    def __init__(self, parser: argparse.ArgumentParser, dest: str) -> None:
        self._subparsers = parser.add_subparsers(dest=dest, required=True)
        self._names: list[str] = []

    def add(
        self, name: str, help: str, description: str | None = None, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        """Add the subcommand ``name``; ``epilog`` holds its examples."""
        self._names.append(name)
        # Usage and "required" errors list the subcommands by name, not the ``dest``.
        self._subparsers.metavar = "{" + ",".join(self._names) + "}"
        return self._subparsers.add_parser(name, help=help, description=description, epilog=epilog)


def run_command(prog: str, func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a subcommand; expected failures print ``prog: error: ...`` on one line and return 1."""
    try:
        return func(args) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """An expected failure's message on one line (a ``KeyError``'s without the quotes ``str`` adds)."""
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(message.split())


def add_needs_server_extra(commands: Commands, name: str, missing: ModuleNotFoundError) -> None:
    """Add ``name`` as a command that only says, on one line, that this install (a client-only one)
    lacks the server extra it needs; ``missing`` is the import that failed."""
    needs = f"needs pdeserve[server] ({missing.name} is not installed)"
    command = commands.add(
        name, help=needs, description=f"This install {needs}: pip install 'pdeserve[server]'."
    )
    command.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    command.set_defaults(func=functools.partial(_needs_server_extra, command.prog, missing.name))


def _needs_server_extra(command: str, module: str, args: argparse.Namespace) -> None:
    raise RuntimeError(
        f"{command} needs pdeserve's server extra ({module} is not installed): pip install 'pdeserve[server]'"
    )
