"""The routed answer path of an inference request that states the error it accepts, whatever its
protocol (``Solve``'s ``max_error``, ``ModelInfer``'s parameter ``max_error``).

``routed_answer``: lookup -> validate -> limits -> ``router.plan`` -> execute -> checked answer. The
surrogate path runs the replica's batched forward pass and the checks every answer carries; a sample whose
estimate misses ``max_error`` escalates to the route's classical path. A classical path (a ladder rung or
the reference solve) runs on the replica's reference thread within ``REFERENCE_TIMEOUT_S``, its work
bounded as a refinement's; its check carries the ledger's recorded error for that path
(``ESTIMATE_METHOD_LEDGER``). The servicer only decodes the request and encodes the answer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import numpy as np

from pdeserve.operators import estimates
from pdeserve.operators.card import REFERENCE_PATH, SURROGATE_PATH, LedgerEntry, ModelCard
from pdeserve.serving import router
from pdeserve.serving.checks import (
    LEDGER,
    Answer,
    SampleCheck,
    answer,
    bound_classical_work,
    classical_reference,
    finite,
    requested_max_error,
    samples,
)
from pdeserve.serving.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
)
from pdeserve.serving.family import solver_unavailable_reason

if TYPE_CHECKING:
    from pdeserve.operators.surrogate import Surrogate

# The label of the reference solve in AnswerCheck.rung.
REFERENCE_RUNG = "reference"
# Ladders a process keeps built, by (card, grid side): building one can cost more than a coarse rung's
# solve (Navier-Stokes checks the stability of every grid and step: about 0.15 s), and its solvers keep
# their set-up across requests (Darcy's symbolic factorisation).
LADDERS_KEPT = 32
_ladders: collections.OrderedDict[tuple[int, int], tuple[ModelCard, Any, Any, list]] = (
    collections.OrderedDict()
)
_ladders_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Wanted:
    """What a request with ``max_error`` asks of the router."""

    max_error: float
    method: str


def requested_route(max_error: float, method: str, tolerance: float | None, field: str) -> Wanted | None:
    """The routing a request asks for (None without ``max_error``: the answer path of old); ``method``
    is ``router.AUTO`` when the request names none. ``InvalidArgument`` for a bad ``max_error``, a
    method without it, or both a tolerance and a ``max_error``."""
    wanted = requested_max_error(max_error, field)
    if wanted is None:
        if method != router.AUTO:
            raise InvalidArgument(f"a method ({method}) needs {field}: state the error the answer may have")
        return None
    if tolerance is not None:
        raise InvalidArgument(f"ask for either a tolerance or {field}, not both")
    return Wanted(wanted, method)


def ledger_estimate(entry: LedgerEntry, coverage: float) -> estimates.Estimate:
    """The ledger's recorded error of ``entry``'s path as an answer's estimate (no indicator)."""
    return estimates.Estimate(math.nan, entry.error_quantile, coverage)


def ladder(card: ModelCard, side: int) -> tuple[Any, Any, list]:
    """``operators.validation.ladder_of(card, side)`` (rungs up to the finer of ``side`` and the training
    side), built once per card and side for the :data:`LADDERS_KEPT` most recently used."""
    from pdeserve.operators.validation import ladder_of

    key = (id(card), side)
    with _ladders_lock:
        kept = _ladders.get(key)
        if kept is not None and kept[0] is card:  # the same card object, not one at a reused address
            _ladders.move_to_end(key)
            return kept[1:]
    built = ladder_of(card, side, finest=max(side, card.training_resolution[-1]))
    with _ladders_lock:
        _ladders[key] = (card, *built)
        while len(_ladders) > LADDERS_KEPT:
            _ladders.popitem(last=False)
    return built


def classical_answers(
    card: ModelCard, entry: LedgerEntry, x: np.ndarray, stop: threading.Event
) -> np.ndarray:
    """``entry``'s classical path (a rung, or the reference) on a validated ``(batch, inputs, *grid)``
    request: ``(batch, outputs, *grid)`` float32; stops between samples of the reference once ``stop``
    is set."""
    from pdeserve.operators.validation import rung_answers

    if entry.path == REFERENCE_PATH:
        solved = []
        for sample in x:
            if stop.is_set():
                raise DeadlineExceeded("the classical answer was abandoned")
            fields = {name: sample[c] for c, name in enumerate(card.input_names)}
            solved.append([classical_reference(card, fields)[name] for name in card.output_names])
        return np.asarray(solved, dtype=np.float32)
    family, params, rungs = ladder(card, x.shape[-1])
    (rung,) = [r for r in rungs if r.label == entry.rung] or [None]
    if rung is None:  # not on this grid's ladder: the reference answers instead
        return classical_answers(card, dataclasses.replace(entry, path=REFERENCE_PATH), x, stop)
    out = rung_answers(card, family, params, rung, x.astype(np.float64))
    finite({"answer": out}, f"the classical solve ({entry.rung})")
    return out.astype(np.float32)


def within_bounds(stacked: np.ndarray) -> bool:
    """Whether a validated request's classical work lies within the refinement limits."""
    try:
        bound_classical_work(
            math.prod(stacked.shape[2:]), stacked.shape[0] * math.prod(stacked.shape[2:]), ""
        )
    except ResourceExhausted:
        return False
    return True


class DataPlane:
    """The routed answer path of one replica.

    Parameters
    ----------
    forward : callable
        ``await forward(surrogate, stacked) -> outputs``: the replica's batched forward pass.
    checker : Checker
        The replica's checks.
    pool : Executor
        The thread classical answers run on (the replica's reference thread).
    timeout_s : float
        Longest a request's classical answers may take.
    metrics : Metrics
        Where escalations are counted.
    """

    def __init__(
        self, forward: Callable, checker: Any, pool: Executor, timeout_s: float, metrics: Any
    ) -> None:
        self.forward, self.checker, self.pool, self.timeout_s, self.metrics = (
            forward,
            checker,
            pool,
            timeout_s,
            metrics,
        )
        self.costs = router.Costs()

    def route(self, surrogate: Surrogate, stacked: np.ndarray, wanted: Wanted) -> router.Route:
        """The route of a validated request (refused before any work when there is none)."""
        card = surrogate.card
        if card.ledger is None:
            raise FailedPrecondition(
                f"model {surrogate.name} version {surrogate.version} has no ledger to route max_error by; "
                "leave max_error 0, or validate the model (pdeserve models validate)"
            )
        missing = solver_unavailable_reason(card)
        if missing:  # no classical path to verify the surrogate against or escalate to
            raise FailedPrecondition(f"max_error needs the model's classical solver: {missing}")
        classical = within_bounds(stacked)
        try:
            return router.plan(
                wanted.max_error,
                wanted.method,
                card.ledger,
                self.costs.of(surrogate.name, surrogate.version),
                classical,
            )
        except router.NoRoute as exc:
            raise OutOfRange(str(exc)) from None

    async def classical(
        self, surrogate: Surrogate, entry: LedgerEntry, x: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """``entry``'s answers to ``x`` on the reference thread within the time limit, and their seconds."""
        stop = threading.Event()
        started = time.perf_counter()
        work = asyncio.get_running_loop().run_in_executor(
            self.pool, classical_answers, surrogate.card, entry, x, stop
        )
        try:
            out = await asyncio.wait_for(work, self.timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the classical answer ({entry.rung or entry.path}) took longer than this server's limit of "
                f"{self.timeout_s:g} s; send fewer samples per request or a larger max_error"
            ) from None
        finally:
            stop.set()
        seconds = time.perf_counter() - started
        self.costs.update(surrogate.name, surrogate.version, entry, seconds, len(x))
        return out, seconds

    def classical_check(
        self,
        card: ModelCard,
        entry: LedgerEntry,
        outputs: dict[str, np.ndarray],
        seconds: float,
        predicted: float,
    ) -> SampleCheck:
        return SampleCheck(
            outputs,
            ledger_estimate(entry, card.ledger.coverage),
            estimates.CLASSICAL,
            method=LEDGER,
            rung=entry.rung or REFERENCE_RUNG,
            predicted_ms=predicted * 1e3,
            measured_ms=seconds * 1e3,
        )

    async def answer(
        self,
        surrogate: Surrogate,
        inputs: dict[str, np.ndarray],
        stacked: np.ndarray,
        batched: bool,
        route: router.Route,
        max_error: float,
        started: float,
    ) -> tuple[Answer, float]:
        """The routed answer of a validated request, and the milliseconds until its first outputs."""
        card, names = surrogate.card, surrogate.output_names
        n = len(stacked)
        entry = route.entry
        if entry.path != SURROGATE_PATH:
            out, seconds = await self.classical(surrogate, entry, stacked)
            ready_ms = (time.perf_counter() - started) * 1e3
            outputs = {name: out[:, i] if batched else out[0, i] for i, name in enumerate(names)}
            checks = [
                self.classical_check(card, entry, sample, seconds / n, route.predicted_seconds)
                for sample in samples(outputs, batched)
            ]
            return answer(card, inputs, outputs, batched, checks, None), ready_ms
        forward_started = time.perf_counter()
        out = await self.forward(surrogate, stacked)
        ready_ms = (time.perf_counter() - started) * 1e3
        seconds = time.perf_counter() - forward_started
        outputs = {name: out[:, i] if batched else out[0, i] for i, name in enumerate(names)}
        checks = await self.checker.check(surrogate, inputs, outputs, batched, None)
        self.costs.update(surrogate.name, surrogate.version, entry, time.perf_counter() - forward_started, n)
        checks = [
            dataclasses.replace(c, predicted_ms=route.predicted_seconds * 1e3, measured_ms=seconds / n * 1e3)
            for c in checks
        ]
        missed = [
            i
            for i, c in enumerate(checks)
            if c.estimate is None or c.estimate.relative_l2 is None or c.estimate.relative_l2 > max_error
        ]
        if missed and route.escalation is not None:
            self.metrics.escalations.inc(
                len(missed), tags={"model": surrogate.name, "version": surrogate.version}
            )
            again, seconds = await self.classical(surrogate, route.escalation, stacked[missed])
            predicted = self.costs.of(surrogate.name, surrogate.version).get(
                router.path_key(route.escalation), route.escalation.seconds
            )
            for j, i in enumerate(missed):
                sample = {name: again[j, c] for c, name in enumerate(names)}
                checks[i] = self.classical_check(
                    card, route.escalation, sample, seconds / len(missed), predicted
                )
            stacked_out = np.stack([[c.outputs[name] for name in names] for c in checks]).astype(np.float32)
            outputs = {
                name: stacked_out[:, i] if batched else stacked_out[0, i] for i, name in enumerate(names)
            }
        return answer(card, inputs, outputs, batched, checks, None), ready_ms
