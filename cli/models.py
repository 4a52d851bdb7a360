"""``pdeserve models list|rollback|validate``: a repository's versions and their origin; serving an older
one again; measuring a version's errors across grid sides and calibrating its error estimate."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pdeserve.cli.parsing import EXPECTED_ERRORS, Commands, one_line

if TYPE_CHECKING:
    from pdeserve.operators.card import Lineage
    from pdeserve.operators.repository import ModelRepository

EXAMPLES = """examples:
  pdeserve models list --repo models
  pdeserve models list --repo models darcy-fno
  pdeserve models rollback darcy-fno --to 1 --repo models
  pdeserve models validate darcy-fno --repo models
  pdeserve models validate darcy-fno --repo models --version 1 --samples 400 --seed 7
"""


def add_models_command(commands: Commands) -> None:
    """Add ``models`` and its ``list``, ``rollback`` and ``validate``."""
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
    validate = actions.add(
        "validate",
        help="measure errors across grid sides and calibrate the error estimate (republished)",
        description="Draw fresh samples from the model's PDE distribution, solve them classically, "
        "calibrate the error estimate (split conformal) at the training grid and measure the error "
        "across grid sides; publish the same weights with this card as the next version (lineage "
        "mode validate). A model without a classical solver (trained on imported data) gets the "
        "solver-free estimate instead, calibrated on half the held-out split of the training data its "
        "lineage records (the file is read back and checked by fingerprint) and its coverage measured "
        "on the other half.",
        epilog=EXAMPLES,
    )
    validate.add_argument("name", help="model name")
    validate.add_argument("--repo", required=True, help="model repository folder")
    validate.add_argument("--version", help="the version to validate (default: the newest)")
    validate.add_argument(
        "--samples", type=int, default=200, metavar="N", help="fresh samples that calibrate the estimate"
    )
    validate.add_argument(
        "--sweep-samples", type=int, default=8, metavar="N", help="fresh samples per grid side of the sweep"
    )
    validate.add_argument("--coverage", type=float, default=0.9, help="stated coverage of the estimate")
    validate.add_argument(
        "--rollout-samples",
        type=int,
        metavar="N",
        help="fresh trajectories that calibrate a time-mapped model's rollout estimate (default 20)",
    )
    validate.add_argument(
        "--rollout-steps",
        type=int,
        metavar="N",
        help="forward passes of that calibration's horizon (default 40)",
    )
    validate.add_argument(
        "--ledger-samples",
        type=int,
        default=30,
        metavar="N",
        help="fresh samples of the ledger: the error quantile, mean error and seconds per sample of the "
        "surrogate, of every classical ladder rung and of the reference, which the server's router reads "
        "(default 30; 0: none)",
    )
    validate.add_argument("--seed", type=int, default=0, help="seeds the fresh samples")
    validate.set_defaults(func=_validate)


def _list(args: argparse.Namespace) -> None:
    """List every version it can; a version whose card cannot be read is a row saying why, and the
    command then fails (after listing the rest) so that scripts notice."""
    from pdeserve.operators.errors import CheckpointError
    from pdeserve.operators.repository import ModelRepository

    repo = ModelRepository(args.repo)
    names = [args.name] if args.name else repo.names()
    if not names:
        raise LookupError(f"no published models in {args.repo}")
    unreadable = listed = 0
    for name in names:
        served, why = _served(repo, name)  # an unknown model raises here, before any output
        print(f"{name} ({'* = served to requests that name no version' if why is None else why})")
        print(f"  {'version':<9}{'published':<27}{'held-out rel L2':<17}{'datasets':<10}origin")
        for version in repo.versions(name):
            listed += 1
            marker = "*" if version == served else " "
            try:
                _, card = repo.card(name, version)
            except EXPECTED_ERRORS as exc:
                unreadable += 1
                print(f"  {version + marker:<9}unreadable card: {one_line(exc)}")
                continue
            lineage = card.lineage
            published = (lineage and lineage.published_at) or card.created_at
            datasets = len(lineage.datasets) if lineage else 0
            error = card.metrics.get("test_relative_l2")
            print(
                f"  {version + marker:<9}{published:<27}"
                f"{'-' if error is None else f'{error:.4f}':<17}"
                f"{datasets or '?':<10}{_origin(lineage)}"
            )
    if unreadable:
        raise CheckpointError(
            f"{unreadable} of {listed} model cards could not be read (the rows marked 'unreadable card')"
        )


def _served(repo: ModelRepository, name: str) -> tuple[str | None, str | None]:
    """``(version, None)``: the version served to requests that name no version; ``(None, why)`` when
    the repository cannot tell (a version folder it cannot read). An unknown model raises."""
    from pdeserve.operators.repository import ModelNotFoundError

    try:
        return repo.resolve(name)[0], None
    except ModelNotFoundError:
        raise
    except EXPECTED_ERRORS as exc:
        return None, f"served version unknown: {one_line(exc)}"


def _origin(lineage: Lineage | None) -> str:
    """How a version came about, from its lineage."""
    if lineage is None:
        return "trained (published before lineage was recorded)"
    if lineage.mode == "rollback":
        return f"rollback of {lineage.rollback_of} (replacing {lineage.replaces})"
    if lineage.mode == "fine-tune":
        return f"fine-tuned from {lineage.parent}"
    if lineage.mode == "validate":
        return f"validated and calibrated {lineage.parent}"
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


def _validate(args: argparse.Namespace) -> None:
    from pdeserve.operators.errors import FamilyUnavailableError
    from pdeserve.operators.validation import publish_validated

    try:
        version, card = _publish_validated(args, publish_validated)
    except FamilyUnavailableError as exc:  # one line, like every expected failure
        raise LookupError(f"cannot validate {args.name}: {exc}") from None
    free = card.solver_free
    if card.validation is None and free is not None:
        print(
            f"published {args.name} version {version}: version {card.lineage.parent}'s weights; solver-free "
            f"error estimate {free.scale:.3g} x {free.indicator} at {free.coverage:.0%} stated coverage "
            f"({free.n_samples} held-out samples), {free.measured_coverage:.1%} measured on "
            f"{free.n_test} others"
        )
        return
    _print_validated(args, version, card)


def _publish_validated(args: argparse.Namespace, publish_validated):
    return publish_validated(
        args.repo,
        args.name,
        args.version,
        args.samples,
        args.sweep_samples,
        args.seed,
        args.coverage,
        args.command_line,
        **{
            keyword: value
            for keyword, value in (
                ("rollout_samples_count", args.rollout_samples),
                ("rollout_steps", args.rollout_steps),
                ("ledger_samples", args.ledger_samples),
            )
            if value is not None
        },
    )


def _print_validated(args: argparse.Namespace, version: str, card) -> None:
    low, high = card.validation.validated_range()
    calibration, rollout = card.calibration, card.rollout_calibration
    print(
        f"published {args.name} version {version}: version {card.lineage.parent}'s weights; grid sides "
        f"{low}..{high} within {card.validation.max_factor:g}x of the training side's error; error "
        f"estimate {calibration.scale:.3g} x {calibration.indicator} at {calibration.coverage:.0%} coverage "
        f"({calibration.n_samples} samples)"
        + (
            ""
            if rollout is None
            else f"; along a rollout {rollout.scale:.3g} x the indicator for {rollout.steps} passes "
            f"({rollout.n_samples} trajectories)"
        )
    )
    if card.ledger is not None:
        ledger = card.ledger
        print(
            f"ledger at side {ledger.side} ({ledger.n_samples} samples): error at {ledger.coverage:.0%}, "
            "mean error, ms per sample"
        )
        for entry in ledger.entries:
            print(
                f"  {entry.path:9} {entry.rung:42} {entry.error_quantile:9.3g} {entry.mean_error:9.3g} "
                f"{1e3 * entry.seconds:9.3g}"
            )
