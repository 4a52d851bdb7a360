"""Which path answers a request that states the error it accepts: the payoff table at work.

:func:`plan` reads a model's ledger (``operators.card.Ledger``: the error quantile, at the card's
coverage, and the seconds per sample of the surrogate, of every rung of its family's classical ladder and
of the reference, measured on fresh samples at the training grid) and picks the cheapest path whose
recorded quantile is at most ``max_error``:

- ``auto``: any path (the surrogate, a rung, the reference);
- ``surrogate``: the surrogate first, verified by its calibrated estimate;
- ``classical``: a rung or the reference only.

An answer by the surrogate is verified: a sample whose estimate is above ``max_error`` (or has none) is
answered again by the cheapest classical path that meets it (the route's ``escalation``). A request that
no path can meet (``max_error`` below every allowed path's quantile, the reference's floor included, or
classical work beyond the server's bounds) is refused before any work (:class:`NoRoute`, OUT_OF_RANGE)
with the best error reachable.

Costs start from the ledger's seconds per sample; a replica replaces them by what it measures on the
answers it serves (:class:`Costs`, a moving average per model version and path, bounded in size), and
scales the ledger's cost of a classical path it has not run yet down where the classical paths it ran
cost less than recorded (a ledger measured on a busier machine would otherwise keep every path it
never ran looking dearer than the ones it ran).
``plan`` has no side effects: it reads its arguments only.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from pdeserve.operators.card import RUNG_PATH, SURROGATE_PATH, Ledger, LedgerEntry

# Methods a request may restrict the router to.
AUTO, SURROGATE, CLASSICAL = "auto", "surrogate", "classical"
METHODS = (AUTO, SURROGATE, CLASSICAL)
# Weight of a new measurement in a path's moving average cost, and most (model, version, path) costs a
# replica keeps.
COST_WEIGHT = 0.2
MAX_STEP = 4.0
MAX_COSTS = 1024


def path_key(entry: LedgerEntry) -> str:
    """The name of a ledger entry's path: ``surrogate``, ``reference`` or ``rung:<label>``."""
    return f"{RUNG_PATH}:{entry.rung}" if entry.path == RUNG_PATH else entry.path


@dataclass(frozen=True)
class Route:
    """How a request is answered.

    Parameters
    ----------
    entry : LedgerEntry
        The path that answers first.
    escalation : LedgerEntry or None
        For an answer by the surrogate, the classical path that answers a sample whose estimate misses
        ``max_error`` (None: there is none within the bounds; the answer stays the surrogate's).
    predicted_seconds : float
        The answering path's cost per sample.
    """

    entry: LedgerEntry
    escalation: LedgerEntry | None
    predicted_seconds: float


class NoRoute(Exception):
    """No allowed path meets the requested error; the message says the best one reachable."""


def plan(
    max_error: float,
    method: str,
    ledger: Ledger,
    costs: Mapping[str, float] | None = None,
    classical: bool = True,
) -> Route:
    """The cheapest path of ``ledger`` whose recorded error quantile is at most ``max_error``.

    Parameters
    ----------
    max_error : float
        The relative L2 error the request accepts (> 0).
    method : {"auto", "surrogate", "classical"}
        Which paths may answer first (see the module docstring).
    ledger : Ledger
        The model's ledger.
    costs : mapping of str to float, optional
        Measured seconds per sample by :func:`path_key`, in place of the ledger's; the classical paths
        not in it cost the ledger's times the median ratio of measured to ledger cost over the classical
        paths in it, where that is below 1.
    classical : bool
        Whether the request's classical work lies within the server's bounds (False: only the surrogate
        may answer, and nothing escalates).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    costs = costs or {}
    # Optimistic for the classical paths not run yet: where those run cost less than the ledger says, the
    # others are expected to as well; where they cost more, the others keep the ledger's cost and get
    # tried. Not from the surrogate's cost, which falls with the batch (a classical solve's does not).
    ratios = [
        costs[path_key(e)] / e.seconds
        for e in ledger.entries
        if e.path != SURROGATE_PATH and path_key(e) in costs and e.seconds > 0
    ]
    speed = min(1.0, statistics.median(ratios)) if ratios else 1.0

    def cost(entry: LedgerEntry) -> float:
        unmeasured = entry.seconds if entry.path == SURROGATE_PATH else entry.seconds * speed
        return costs.get(path_key(entry), unmeasured)

    allowed = [
        e
        for e in ledger.entries
        if (e.path == SURROGATE_PATH and method != CLASSICAL)
        or (e.path != SURROGATE_PATH and method != SURROGATE and classical)
    ]
    if method == SURROGATE and classical:  # escalation targets
        fallback = [e for e in ledger.entries if e.path != SURROGATE_PATH]
    else:
        fallback = [e for e in allowed if e.path != SURROGATE_PATH] if classical else []
    meeting = [e for e in allowed if e.error_quantile <= max_error]
    if not meeting:
        raise NoRoute(unreachable(max_error, method, ledger, allowed, classical))
    chosen = min(meeting, key=cost)
    escalation = None
    if chosen.path == SURROGATE_PATH:
        verified = [e for e in fallback if e.error_quantile <= max_error]
        if not verified:  # an answer whose estimate misses could not be replaced: no promise to keep
            limits = "" if classical else " within this server's limits for this request"
            raise NoRoute(
                f"the surrogate's answers are replaced by a classical path when their estimate misses "
                f"max_error {max_error:g}, and no classical path of this model reaches it{limits}; send "
                "fewer samples per request, a coarser grid or a larger max_error"
            )
        escalation = min(verified, key=cost)
    return Route(chosen, escalation, cost(chosen))


def unreachable(
    max_error: float, method: str, ledger: Ledger, allowed: list[LedgerEntry], classical: bool
) -> str:
    """Why no path meets ``max_error``, with the best error reachable."""
    where = f"at {ledger.coverage:.0%} coverage, measured at grid side {ledger.side}"
    bounds = (
        ""
        if classical
        else " (the classical paths are beyond this server's limits for this request: send fewer samples "
        "or a coarser grid)"
    )
    if not allowed:
        return f"no path of method {method} can answer this request{bounds}"
    best = min(allowed, key=lambda e: e.error_quantile)
    name = best.rung or best.path
    return (
        f"max_error {max_error:g} is below the best error this model's paths reach with method {method}: "
        f"{best.error_quantile:.3g} ({name}) {where}{bounds}; ask for a max_error of at least that"
    )


class Costs:
    """A replica's measured seconds per sample of each path, per model version: a moving average
    (weight :data:`COST_WEIGHT`) of the answers it served, for the :data:`MAX_COSTS` most recently
    updated (model, version, path)."""

    def __init__(self) -> None:
        self._seconds: collections.OrderedDict[tuple[str, str, str], float] = collections.OrderedDict()

    def of(self, model: str, version: str) -> dict[str, float]:
        """The measured costs of ``model``'s ``version`` by :func:`path_key`."""
        return {key: s for (m, v, key), s in self._seconds.items() if m == model and v == version}

    def update(self, model: str, version: str, entry: LedgerEntry, seconds: float, samples: int) -> None:
        """Record that ``entry``'s path answered ``samples`` samples in ``seconds``."""
        if samples < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        key = (model, version, path_key(entry))
        # Starts from the ledger's cost, and one answer moves it by at most a factor of MAX_STEP: a cold
        # first pass or a wait in a queue must not pin the router to another path.
        old = self._seconds.pop(key, entry.seconds)
        measured = min(max(seconds / samples, old / MAX_STEP), old * MAX_STEP)
        self._seconds[key] = (1 - COST_WEIGHT) * old + COST_WEIGHT * measured
        while len(self._seconds) > MAX_COSTS:
            self._seconds.popitem(last=False)
