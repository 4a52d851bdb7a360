"""``pdeserve models list|rollback``: a repository's versions and their origin; serving an older one again."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pdeserve.cli.parsing import Commands

if TYPE_CHECKING:
    from pdeserve.operators.card import Lineage

EXAMPLES = """examples:
  pdeserve models list --repo models
  pdeserve models list --repo models darcy-fno
  pdeserve models rollback darcy-fno --to 1 --repo models
"""


def add_models_command(commands: Commands) -> None:
    """Add ``models`` and its ``list`` and ``rollback``."""
    models = commands.add(
        "models", help="list a repository's models and versions; roll a model back", epilog=EXAMPLES
    )
    actions = Commands(models, dest="models_command")
    listing = actions.add(
        "list",
        help="every version with its origin, held-out error and data; * marks the served one",
        epilog=EXAMPLES,
    )
    listing.add_argument("name", nargs="?", help="only this model")
    listing.add_argument("--repo", required=True, help="model repository folder")
    listing.set_defaults(func=_list)
    rollback = actions.add(
        "rollback",
        help="serve an older version again (republished as the next version)",
        description="Publish VERSION's files again as the next version, so requests that name no "
        "version get its weights; versions stay immutable and the lineage says rollback_of.",
        epilog=EXAMPLES,
    )
    rollback.add_argument("name", help="model name")
    rollback.add_argument("--to", required=True, metavar="VERSION", help="the version to serve again")
    rollback.add_argument("--repo", required=True, help="model repository folder")
    rollback.set_defaults(func=_rollback)


def _list(args: argparse.Namespace) -> None:
    from pdeserve.operators.repository import ModelRepository

    repo = ModelRepository(args.repo)
    if args.name:
        repo.resolve(args.name)  # unknown model: one clear error
    names = [args.name] if args.name else repo.names()
    if not names:
        raise LookupError(f"no published models in {args.repo}")
    for name in names:
        versions = repo.versions(name)
        print(f"{name} (* = served to requests that name no version)")
        print(f"  {'version':<9}{'published':<27}{'held-out rel L2':<17}{'datasets':<10}origin")
        for version in versions:
            _, card = repo.card(name, version)
            lineage = card.lineage
            published = (lineage and lineage.published_at) or card.created_at
            datasets = len(lineage.datasets) if lineage else 0
            error = card.metrics.get("test_relative_l2")
            marker = "*" if version == versions[-1] else " "
            print(
                f"  {version + marker:<9}{published:<27}"
                f"{'-' if error is None else f'{error:.4f}':<17}"
                f"{datasets or '?':<10}{_origin(lineage)}"
            )


def _origin(lineage: Lineage | None) -> str:
    """How a version came about, from its lineage."""
    if lineage is None:
        return "trained (published before lineage was recorded)"
    if lineage.mode == "rollback":
        return f"rollback of {lineage.rollback_of} (replacing {lineage.replaces})"
    if lineage.mode == "fine-tune":
        return f"fine-tuned from {lineage.parent}"
    if lineage.mode == "from-scratch":
        return f"retrained from scratch, parent {lineage.parent}"
    return "trained"


def _rollback(args: argparse.Namespace) -> None:
    from pdeserve.operators.repository import ModelRepository

    version = ModelRepository(args.repo).rollback(args.name, args.to, args.command_line)
    print(
        f"published {args.name} version {version}: version {args.to}'s weights, now served to "
        "requests that name no version"
    )
