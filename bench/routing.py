"""Does the router keep its promise, and what does it save? Routed answers against the true errors.

Usage: ``python bench/routing.py [--quick] [--families darcy,burgers,navier-stokes] [--[no-]grpc]
[--out bench/results/routing.json] [--img-dir docs/img]``. ``--quick`` (darcy-fno and a tiny Burgers
model, in process only unless ``--grpc``) is what the test suite runs.

A request that states ``max_error`` (relative L2) is answered by the path the model's ledger predicts to
be the cheapest that meets it (``serving/router.py``, executed by ``serving/dataplane.py``'s
``DataPlane``): the surrogate verified by its calibrated estimate (a sample whose estimate misses is
answered again by the cheapest classical path that meets ``max_error``), a rung of the family's
classical ladder, or the reference solve. Per family, on the model's training grid:

- The model: the bundled ``darcy-fno`` and ``ns-fno`` (``models/``, newest version), and the payoff
  benchmark's Burgers FNO trained in the run (``bench/payoff.py``'s plan; calibrated on fresh samples
  first, as publishing a model does). A bundled model whose card carries a ledger is routed by that
  ledger, as ``pdeserve serve`` routes it (``pdeserve models validate`` records it); otherwise, and for
  the model trained here, the ledger is measured here (``operators.validation.measure_ledger``, coverage
  0.9: every path against the family's reference solved twice as finely, the median one-sample call its
  cost). Each is published with its ledger into a temporary repository.
- The workload: fresh samples (root seed ``--seed``, which no ledger, calibration or training uses),
  each asked at every ``max_error`` of :data:`LEVELS`, the levels in a random order per sample; one
  sample per request. Truth: the payoff benchmark's fine reference (the family's generator on
  ``reference_resolution``, and a small time step, subsampled to the model's grid: ``payoff.draw``,
  ``payoff.samples_at``), solved apart from the ledger's references.
- Three ways of answering (and a fourth, below), timed alternately per request in an order rotated
  per request (the machine's speed drifts): the router (the ``DataPlane`` itself, with the surrogate's
  forward pass in place of a replica's batcher, and the replica's ``Checker``); (a) always the
  surrogate with its estimate, refined to the tolerance ``max_error`` where the estimate misses it
  (``serving.checks.check_sample``, the server's tolerance path: the family's refinement or its
  classical solve); (b) the classical path an oracle picks knowing the true errors: the cheapest (median
  one-sample call, measured before the workload) of the ledger's classical paths (rungs and the
  reference) whose true errors on these samples are at most ``max_error`` for at least 90% of them.
  Beside them, the router with method ``surrogate`` (the surrogate first, wherever its recorded error
  meets the level): the verification by the estimate and the escalation, which ``auto`` reaches only
  where the surrogate is the cheapest path.
- Through gRPC (a real Ray Serve application on the temporary repository, ``serving.server.start``):
  ``Solve(max_error=...)`` against (a) as ``Solve(tolerance=...)``, alternating per request. The
  server's tolerance path refines every sample (it does not look at the estimate first), so its (a) is
  an upper bound of the in-process one. (b) has no gRPC form (a request cannot name a rung).

Per family and level: the router's path mix and escalations, refusals (OUT_OF_RANGE before any work),
coverage (share of answers whose true error is at most ``max_error``; the ledger's promise: >= 0.9),
answers silently worse (true error above ``max_error`` while their check's estimate claimed at most
``max_error``; a 0.9 quantile allows one answer in ten), the median and mean wall seconds per answered
sample of each side, the speedup over (a), and the verdict (goal: the router's cost at most 1.1 times the
cheaper of (a) and (b)). Costs are compared on medians: on a shared machine one preempted request moves
a mean of a few milliseconds by several times. One torch thread and one BLAS thread on every path.
Writes JSON (every request's outcome included) and one PNG per family (median cost per answer against
``max_error``, log-log).
"""

from __future__ import annotations

import os

# One BLAS and one OpenMP thread for every path, the classical pool's and the checks' threads too: on a
# shared 2-core machine idle threads spin and add noise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import contextlib
import math
import platform
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import payoff
import torch
from common import free_port, save_figure, write_results

from pdeserve.operators import training, validation
from pdeserve.operators.card import REFERENCE_PATH, SURROGATE_PATH, Ledger, LedgerEntry
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.repository import ModelRepository, write_card
from pdeserve.operators.surrogate import Surrogate, load_surrogate
from pdeserve.serving.checks import Checker, SampleCheck
from pdeserve.serving.dataplane import DataPlane, Wanted, classical_answers
from pdeserve.serving.errors import OutOfRange
from pdeserve.serving.router import AUTO, SURROGATE, NoRoute, path_key
from pdeserve.serving.router import plan as route_of

# The errors a request accepts, and the share of answers that must meet them (the oracle's rule and
# the coverage goal); the router's cost goal against the cheaper of (a) and (b).
LEVELS = (0.1, 0.03, 0.01, 0.003)
SHARE = 0.9
COST_GOAL = 1.1
# A classical answer's time limit in process (a replica's REFERENCE_TIMEOUT_S).
CLASSICAL_TIMEOUT_S = 60.0
# Why a run without --grpc has no gRPC part (recorded in its JSON).
NO_GRPC = "--quick or --no-grpc: starting Ray Serve would take much of the quick mode's budget"
# The seeds of a ledger measured here and of a calibration here (validation streams), apart from the
# workload's root seed.
LEDGER_SEED, CALIBRATION_SEED = 7101, 7102
# The ways of answering a request, as the JSON names them (gRPC's with a ``grpc_`` prefix).
ROUTER, ALWAYS_SURROGATE, ORACLE, SURROGATE_FIRST = "router", "always_surrogate", "oracle", "surrogate_first"
REFUSED = "refused"


@dataclass(frozen=True)
class Setup:
    """One family's routing benchmark: the payoff benchmark's plan (``plan.samples``: the workload's
    sample count); fresh samples of a ledger measured here, and of them those the reference solve
    answers; fresh samples that calibrate the estimate of a model trained here."""

    plan: payoff.Plan
    ledger_samples: int
    ledger_reference_samples: int
    calibration_samples: int


@dataclass(frozen=True)
class Candidate:
    """A classical path of the ledger measured on the workload's samples (the oracle's table): its
    ``router.path_key``, its ledger entry, and per sample the wall time of a one-sample call and the true
    relative L2 error of the answer."""

    key: str
    entry: LedgerEntry
    seconds: tuple[float, ...]
    errors: tuple[float, ...]

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds))


@dataclass(frozen=True)
class Outcome:
    """One request's answer of one sample: what answered (``router.path_key`` form: ``surrogate``,
    ``refined``, ``reference``, ``rung:<label>``; or ``refused``), whether by the route's escalation
    after the surrogate's estimate missed, the check's estimated error (a classical answer's: the ledger's
    recorded error), the true relative L2 error against the fine reference and the request's wall time
    (NaN when refused)."""

    path: str
    escalated: bool
    estimate: float | None
    error: float
    seconds: float


@dataclass(frozen=True)
class Summary:
    """One way of answering at one level: samples answered and requests refused, the answers' share by
    path, the escalations, the coverage (None: no answer), the answers silently worse (true error above
    the level while their estimate claimed at most it), the mean and median wall time per answer and the
    largest true error."""

    answers: int
    refusals: int
    mix: dict[str, float]
    escalations: int
    coverage: float | None
    silently_worse: int
    seconds: float | None
    median_seconds: float | None
    max_error: float | None


def summarise(outcomes: Sequence[Outcome], level: float) -> Summary:
    answered = [o for o in outcomes if o.path != REFUSED]
    worse = [o for o in answered if o.error > level and o.estimate is not None and o.estimate <= level]
    some = bool(answered)
    return Summary(
        len(answered),
        len(outcomes) - len(answered),
        {p: k / len(answered) for p, k in Counter(o.path for o in answered).most_common()},
        sum(o.escalated for o in answered),
        float(np.mean([o.error <= level for o in answered])) if some else None,
        len(worse),
        float(np.mean([o.seconds for o in answered])) if some else None,
        float(np.median([o.seconds for o in answered])) if some else None,
        float(max(o.error for o in answered)) if some else None,
    )


def oracle(candidates: Sequence[Candidate], level: float, share: float = SHARE) -> Candidate | None:
    """The cheapest candidate (median call) whose true errors are at most ``level`` for at least
    ``share`` of the samples (None: no candidate reaches it)."""
    meeting = [c for c in candidates if np.mean(np.asarray(c.errors) <= level) >= share]
    return min(meeting, key=lambda c: c.median_seconds, default=None)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def verdict(router: Summary, of_best: float | None, best: Candidate | None) -> str:
    """Kept, or which promise or goal the router missed (``of_best``: its median cost over the cheaper
    median of (a) and (b))."""
    if router.answers == 0:
        return f"refused; {best.key} reaches it" if best else "refused: no classical path reaches it"
    misses = []
    if router.coverage < SHARE:
        misses.append(f"coverage {router.coverage:.0%}")
    if router.refusals:
        misses.append(f"{router.refusals} refused")
    if of_best is not None and of_best > COST_GOAL:
        misses.append(f"cost {of_best:.3g}x the best")
    return "kept" if not misses else "missed: " + ", ".join(misses)


def setups(quick: bool) -> list[Setup]:
    """Quick: the bundled ``darcy-fno`` (reference 127, 30 samples) and the payoff's tiny Burgers FNO
    trained at 64 in seconds (reference 256, 6 samples: (a)'s refinement of it is its 1000-step
    classical solve), a ledger measured here on 10 samples, the reference on all of them; full:
    darcy-fno (reference 505), the payoff's Burgers FNO trained at 256 (reference 4096), ns-fno
    (reference 128 x 128, dt 5e-4), a ledger measured here as ``pdeserve models validate`` measures it
    (30 samples, the reference on at least 4)."""
    plans = {p.family: p for p in payoff.plans(quick)}
    if quick:
        return [
            Setup(replace(plans["darcy"], reference_resolution=127, samples=30), 10, 10, 0),
            Setup(replace(plans["burgers"], samples=6), 10, 10, 9),
        ]
    ledger = (validation.LEDGER_SAMPLES, validation.LEDGER_REFERENCE_SAMPLES)
    return [
        Setup(replace(plans["darcy"], samples=20), *ledger, 0),
        Setup(replace(plans["burgers"], samples=20), *ledger, 20),
        Setup(replace(plans["navier-stokes"], samples=10), *ledger, 0),
    ]


# ----------------------------------------------------------------------------------------------------
# The model under a card with a ledger, in a temporary repository


def published(setup: Setup, models: Path, repo: Path, folder: Path) -> tuple[Surrogate, Any, dict]:
    """The family's surrogate (bundled, or trained and calibrated here) published into ``repo`` under a
    card with a ledger (the bundled card's own, else measured here), loaded back from there; its
    distribution, and where it and its ledger came from."""
    plan = setup.plan
    surrogate, params, provenance = payoff.surrogate_for(plan, models, folder)
    card = surrogate.card
    origin = {"provenance": provenance, "ledger_origin": "", "ledger_seconds": None}
    if provenance.name and card.ledger is not None:
        origin["ledger_origin"] = f"the card of {models.name}/{plan.model} v{surrogate.version}"
    else:
        if not provenance.name:  # trained here: calibrate its estimate, as publishing a model does
            side = card.training_resolution[-1]
            pairs = validation.validation_samples(
                surrogate, side, setup.calibration_samples, CALIBRATION_SEED
            )
            card = card.replace(calibration=validation.calibrate(surrogate, pairs.x, pairs.y, SHARE))
            surrogate.card = card
        started = time.perf_counter()
        ledger = validation.measure_ledger(
            surrogate, setup.ledger_samples, LEDGER_SEED, SHARE, None, setup.ledger_reference_samples
        )
        origin["ledger_seconds"] = time.perf_counter() - started
        n, few = setup.ledger_samples, setup.ledger_reference_samples
        origin["ledger_origin"] = f"measured here ({n} samples, the reference on at least {few})"
        card = surrogate.card = card.replace(ledger=ledger)
    if provenance.name:
        source = ModelRepository(models).resolve(plan.model, surrogate.version)[1]

        def write(target: Path) -> None:
            shutil.copy(source / card.weights.file, target / card.weights.file)
            write_card(target, card)

        version = ModelRepository(repo).publish(plan.model, write)
    else:
        version = training.publish(repo, plan.model, surrogate)
    surrogate = load_surrogate(ModelRepository(repo).resolve(plan.model, version)[1], plan.model, version)
    return surrogate, params, origin


# ----------------------------------------------------------------------------------------------------
# In process


class InProcess:
    """The ways of answering one sample in this process: the router through a ``DataPlane`` (with a
    replica's ``Checker`` and a classical thread), (a), and (b)'s classical paths."""

    def __init__(self, surrogate: Surrogate) -> None:
        self.surrogate = surrogate
        self.loop = asyncio.new_event_loop()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="routing-classical")
        self.checker = Checker()
        # the replica's metrics take the escalations, which are counted here from the answers
        metrics = SimpleNamespace(escalations=SimpleNamespace(inc=lambda n=1, tags=None: None))
        self.plane = DataPlane(self._forward, self.checker, self.pool, CLASSICAL_TIMEOUT_S, metrics)

    async def _forward(self, surrogate: Surrogate, stacked: np.ndarray) -> np.ndarray:
        return surrogate.forward(stacked)

    def close(self) -> None:
        self.loop.close()
        self.pool.shutdown()

    def inputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One sample's request inputs, float32 as they arrive on the wire, with a batch axis."""
        return {name: x[None, c].astype(np.float32) for c, name in enumerate(self.surrogate.input_names)}

    def routed(self, x: np.ndarray, level: float, method: str = AUTO) -> tuple[np.ndarray | None, Outcome]:
        """The router's answer (``(1, outputs, *grid)``; None when refused)."""
        inputs = self.inputs(x)
        started = time.perf_counter()
        stacked, batched = self.surrogate.validate(inputs)
        try:
            route = self.plane.route(self.surrogate, stacked, Wanted(level, method))
        except OutOfRange:
            return None, Outcome(REFUSED, False, None, math.nan, math.nan)
        answer, _ = self.loop.run_until_complete(
            self.plane.answer(self.surrogate, inputs, stacked, batched, route, level, started)
        )
        seconds = time.perf_counter() - started
        (check,) = answer.checks
        escalated = route.entry.path == SURROGATE_PATH and check.path != "surrogate"
        path = path_key(route.escalation if escalated else route.entry)
        out = np.stack([answer.outputs[name] for name in self.surrogate.output_names], axis=1)
        return out, Outcome(path, escalated, estimated(check), math.nan, seconds)

    def always_surrogate(self, x: np.ndarray, level: float) -> tuple[np.ndarray, Outcome]:
        """(a): the surrogate and its estimate, refined to the tolerance ``level`` where it misses."""
        inputs = self.inputs(x)
        started = time.perf_counter()
        stacked, _ = self.surrogate.validate(inputs)
        out = self.surrogate.forward(stacked)
        outputs = {name: out[:, i] for i, name in enumerate(self.surrogate.output_names)}

        def check(tolerance: float | None) -> SampleCheck:
            return self.loop.run_until_complete(
                self.checker.check(self.surrogate, inputs, outputs, True, tolerance)
            )[0]

        checked = check(None)
        refined = estimated(checked) is None or estimated(checked) > level
        if refined:
            checked = check(level)
        seconds = time.perf_counter() - started
        answer = np.stack([checked.outputs[name] for name in self.surrogate.output_names])[None]
        path = checked.path if refined else SURROGATE_PATH
        return answer, Outcome(path, False, estimated(checked), math.nan, seconds)

    def classical(self, entry: LedgerEntry, x: np.ndarray) -> tuple[np.ndarray, float]:
        """``entry``'s classical answer on the classical thread, as the data plane runs it, and its time."""
        stacked, _ = self.surrogate.validate(self.inputs(x))
        started = time.perf_counter()
        work = self.loop.run_in_executor(
            self.pool, classical_answers, self.surrogate.card, entry, stacked, threading.Event()
        )
        out = self.loop.run_until_complete(work)
        return out, time.perf_counter() - started


def estimated(check: SampleCheck) -> float | None:
    return None if check.estimate is None else check.estimate.relative_l2


def true_error(answer: np.ndarray, truth: np.ndarray) -> float:
    return relative_l2(np.asarray(answer, dtype=np.float64), truth)


def candidates(plane: InProcess, samples: payoff.Samples) -> list[Candidate]:
    """Every classical path of the ledger on every sample, one sample per call, in an order rotated per
    sample (after one untimed warm-up call each): their true errors and costs."""
    entries = [e for e in plane.surrogate.card.ledger.entries if e.path != SURROGATE_PATH]
    for entry in entries:
        plane.classical(entry, samples.x[0])
    n = len(samples.x)
    seconds, errors = np.zeros((len(entries), n)), np.zeros((len(entries), n))
    for i in range(n):
        for k in np.roll(np.arange(len(entries)), i):
            out, seconds[k, i] = plane.classical(entries[k], samples.x[i])
            errors[k, i] = true_error(out, samples.y[i : i + 1])
    return [
        Candidate(path_key(e), e, tuple(map(float, seconds[k])), tuple(map(float, errors[k])))
        for k, e in enumerate(entries)
    ]


def workload(n: int, seed: int) -> list[tuple[int, float]]:
    """Every (sample, level) request, each sample's levels in a random order: the mixed workload."""
    rng = np.random.default_rng(seed)
    return [(i, LEVELS[j]) for i in range(n) for j in rng.permutation(len(LEVELS))]


def in_process(
    plane: InProcess, samples: payoff.Samples, table: Sequence[Candidate], seed: int
) -> dict[float, dict[str, list[Outcome]]]:
    """The workload answered by the router, (a), (b) and the router with method ``surrogate``,
    alternately per request in a rotated order (after a warm-up: the forward pass, the estimate's
    solver, the refinement, the cost averages' first step)."""
    best = {level: oracle(table, level) for level in LEVELS}

    def run_oracle(x: np.ndarray, level: float) -> tuple[np.ndarray, Outcome]:
        out, seconds = plane.classical(best[level].entry, x)
        return out, Outcome(best[level].key, False, None, math.nan, seconds)

    sides = {
        ROUTER: plane.routed,
        ALWAYS_SURROGATE: plane.always_surrogate,
        ORACLE: run_oracle,
        SURROGATE_FIRST: lambda x, level: plane.routed(x, level, SURROGATE),
    }
    outcomes: dict[float, dict[str, list[Outcome]]] = {level: {s: [] for s in sides} for level in LEVELS}
    requests = [(0, level) for level in LEVELS] + workload(len(samples.x), seed)
    for request, (i, level) in enumerate(requests):
        for name in np.roll(list(sides), request):
            if name == ORACLE and best[level] is None:
                continue
            out, outcome = sides[name](samples.x[i], level)
            if request < len(LEVELS):  # the warm-up
                continue
            if out is not None:
                outcome = replace(outcome, error=true_error(out, samples.y[i : i + 1]))
            outcomes[level][str(name)].append(outcome)
    return outcomes


# ----------------------------------------------------------------------------------------------------
# Through gRPC


@contextlib.contextmanager
def serving(repo: Path) -> Iterator[str]:
    """A Ray Serve application on ``repo`` (one replica of one CPU), its target; stopped on exit."""
    from pdeserve.serving import server

    taken: set[int] = set()
    grpc_port, http_port = free_port(taken), free_port(taken)
    # HAProxy's own listeners have fixed defaults, which another server on this machine may hold.
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port(taken)))
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port(taken)))
    server.start(repo, grpc_port=grpc_port, http_port=http_port, metrics_port=None, replica_cpus=1)
    try:
        yield f"127.0.0.1:{grpc_port}"
    finally:
        server.stop()


def request_inputs(surrogate: Surrogate, samples: payoff.Samples, i: int) -> dict[str, np.ndarray]:
    return {k: samples.x[i : i + 1, c].astype(np.float32) for c, k in enumerate(surrogate.input_names)}


def wait_until_serving(client: Any, surrogate: Surrogate, samples: payoff.Samples, timeout_s=180.0) -> None:
    """Until the application answers a first request (the proxy routes to it moments after start)."""
    from pdeserve.serving.client import SolverError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.solve_response(surrogate.name, request_inputs(surrogate, samples, 0))
            return
        except SolverError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def through_grpc(
    client: Any, surrogate: Surrogate, samples: payoff.Samples, seed: int
) -> dict[float, dict[str, list[Outcome]]]:
    """The workload through ``Solve``: ``max_error`` (the router) against ``tolerance`` (a), alternately
    (after a warm-up: the model's load, every path's first call)."""
    import grpc

    from pdeserve.serving.client import SolverError
    from pdeserve.serving.tensors import from_tensor

    def call(side: str, i: int, level: float) -> Outcome:
        keyword = {"max_error": level} if side == ROUTER else {"tolerance": level}
        started = time.perf_counter()
        try:
            response = client.solve_response(surrogate.name, request_inputs(surrogate, samples, i), **keyword)
        except SolverError as exc:
            if exc.code != grpc.StatusCode.OUT_OF_RANGE:
                raise
            return Outcome(REFUSED, False, None, math.nan, math.nan)
        seconds = time.perf_counter() - started
        out = np.stack([from_tensor(response.outputs[k], k) for k in surrogate.output_names], axis=1)
        (check,) = response.checks
        estimate = check.estimated_relative_l2 if check.HasField("estimated_relative_l2") else None
        path = {1: SURROGATE_PATH, 2: "refined"}.get(check.path) or (
            REFERENCE_PATH if check.rung in ("", "reference") else f"rung:{check.rung}"
        )
        escalated = side == ROUTER and escalates(surrogate, level, path)
        return Outcome(path, escalated, estimate, true_error(out, samples.y[i : i + 1]), seconds)

    outcomes: dict[float, dict[str, list[Outcome]]] = {
        level: {ROUTER: [], ALWAYS_SURROGATE: []} for level in LEVELS
    }
    requests = [(0, level) for level in LEVELS] + workload(len(samples.x), seed)
    for request, (i, level) in enumerate(requests):
        for side in np.roll([ROUTER, ALWAYS_SURROGATE], request):
            outcome = call(str(side), i, level)
            if request >= len(LEVELS):
                outcomes[level][str(side)].append(outcome)
    return outcomes


def escalates(surrogate: Surrogate, level: float, path: str) -> bool:
    """Whether the router's classical answer (``path``) came from an escalation: the route the ledger
    gives with its recorded costs starts with the surrogate (the server's check names the answering path
    only; the replica's measured costs can move the route, so this is the ledger's view)."""
    return (
        path not in (SURROGATE_PATH, REFUSED) and ledger_route(surrogate.card.ledger, level) == SURROGATE_PATH
    )


# ----------------------------------------------------------------------------------------------------
# Report


def ledger_route(ledger: Ledger, level: float) -> str | None:
    """The path the ledger with its recorded costs routes ``level`` to (None: refused)."""
    try:
        return path_key(route_of(level, AUTO, ledger).entry)
    except NoRoute:
        return None


def level_row(
    level: float,
    local: dict[str, list[Outcome]],
    remote: dict[str, list[Outcome]] | None,
    table: Sequence[Candidate],
    ledger: Ledger,
) -> dict:
    """Everything measured at one ``max_error``: each side's summary (``oracle`` None where no classical
    path reaches the level; ``grpc_...`` None without gRPC), (b)'s path, the path the ledger alone
    routes to, the router's speedup over (a) and its cost over the cheaper of (a) and (b) (medians), the
    verdict and every request's outcome."""
    best = oracle(table, level)
    row: dict[str, Any] = {"max_error": level}
    for side, outcomes in local.items():
        row[side] = summarise(outcomes, level) if side != ORACLE or best else None
    for side in (ROUTER, ALWAYS_SURROGATE):
        row[f"grpc_{side}"] = summarise(remote[side], level) if remote else None
    router, always = row[ROUTER], row[ALWAYS_SURROGATE]
    cheapest = min((s.median_seconds for s in (always, row[ORACLE]) if s and s.median_seconds), default=None)
    row |= {
        "oracle_path": best and best.key,
        "ledger_route": ledger_route(ledger, level),
        "speedup": ratio(always.median_seconds, router.median_seconds),
        "of_best": ratio(router.median_seconds, cheapest),
        "grpc_speedup": remote
        and ratio(row["grpc_always_surrogate"].median_seconds, row["grpc_router"].median_seconds),
    }
    row["verdict"] = verdict(router, row["of_best"], best)
    row["outcomes"] = local | {f"grpc_{side}": answers for side, answers in (remote or {}).items()}
    return payoff.as_json(row)


def short(path: str) -> str:
    return path.removeprefix("rung:").removeprefix("pseudo-spectral ")


def describe_mix(summary: dict, most: int = 3) -> str:
    """The ``most`` most frequent paths and their shares, how many others took the rest, and the
    escalations."""
    if not summary["answers"]:
        return "-"
    shares = list(summary["mix"].items())
    named = [f"{short(p)} {value:.0%}" for p, value in shares[:most]]
    if len(shares) > most:
        others = len(shares) - most
        named.append(f"{others} other{'s' * (others > 1)} {sum(v for _, v in shares[most:]):.0%}")
    escalated = f" ({summary['escalations']} escalated)" if summary["escalations"] else ""
    return "; ".join(named) + escalated


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.3g}"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}x"


def print_table(results: dict[str, dict]) -> None:
    """The docs' tables: per level; the router with method ``surrogate``; the ledger against the truth."""
    print(
        "\n| family | max_error | router: path mix | refused | coverage: router / (a) / (b) | silently "
        "worse | ms per answer, median: router / (a) / (b) | (b) path | speedup over (a) | router / best "
        "| gRPC, median ms: router / (a), coverage, speedup | verdict |\n"
        "|---|---:|---|---:|---|---:|---|---|---:|---:|---|---|"
    )
    for family, result in results.items():
        for row in result["levels"]:
            r, a, b, g, ga = (
                row[k]
                for k in ("router", "always_surrogate", "oracle", "grpc_router", "grpc_always_surrogate")
            )
            grpc = "-"
            if g is not None:
                refused = f", {g['refusals']} refused" if g["refusals"] else ""
                grpc = (
                    f"{ms(g['median_seconds'])} / {ms(ga['median_seconds'])}, {share(g['coverage'])}"
                    f"{refused}, {times(row['grpc_speedup'])}"
                )
            print(
                f"| {family} | {row['max_error']:g} | {describe_mix(r)} | {r['refusals']} "
                f"| {share(r['coverage'])} / {share(a['coverage'])} / {share(b and b['coverage'])} "
                f"| {r['silently_worse']} | {ms(r['median_seconds'])} / {ms(a['median_seconds'])} / "
                f"{ms(b and b['median_seconds'])} | {short(row['oracle_path'] or 'none reaches it')} "
                f"| {times(row['speedup'])} | {times(row['of_best'])} | {grpc} | {row['verdict']} |"
            )
    print(
        "\nMethod surrogate (the surrogate first, verified by its estimate):\n| family | max_error "
        "| answered / refused | escalated | coverage | silently worse | median ms |\n"
        "|---|---:|---|---:|---:|---:|---:|"
    )
    for family, result in results.items():
        for row in result["levels"]:
            s = row["surrogate_first"]
            print(
                f"| {family} | {row['max_error']:g} | {s['answers']} / {s['refusals']} | {s['escalations']} "
                f"| {share(s['coverage'])} | {s['silently_worse']} | {ms(s['median_seconds'])} |"
            )
    print(
        "\n| family | path | ledger error | true error | ledger ms | ms here |\n|---|---|---:|---:|---:|---:|"
    )
    for family, result in results.items():
        s = result["surrogate"]
        entry = s["entry"]
        print(
            f"| {family} | surrogate | {entry['error_quantile']:.2g} | {s['true_quantile']:.2g} "
            f"| {ms(entry['seconds'])} | - |"
        )
        for c in result["candidates"]:
            entry, true = c["entry"], quantile(c["errors"])
            print(
                f"| {family} | {short(c['key'])} | {entry['error_quantile']:.2g} | {true:.2g} "
                f"| {ms(entry['seconds'])} | {ms(float(np.median(c['seconds'])))} |"
            )


def quantile(errors: Sequence[float]) -> float:
    """The smallest level that :data:`SHARE` of the true errors meet (the ``ceil(SHARE n)``-th smallest):
    the oracle's rule, so a path meets a level exactly where this is at most the level."""
    return float(np.sort(errors)[math.ceil(SHARE * len(errors) - 1e-9) - 1])


def plot(family: str, levels: list[dict], path: Path) -> None:
    """Median cost per answer against max_error (log-log): the router, (a), (b); through gRPC dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.6))
    lines = [
        ("router", "router (in process)", "C0", "-o"),
        ("always_surrogate", "(a) surrogate, refined when its estimate misses", "C1", "-s"),
        ("oracle", "(b) oracle's classical path", "C2", "-^"),
        ("surrogate_first", "router, method surrogate", "C4", ":v"),
        ("grpc_router", "router, gRPC", "C0", "--o"),
        ("grpc_always_surrogate", "(a) Solve(tolerance), gRPC", "C1", "--s"),
    ]
    for key, label, colour, style in lines:
        points = [
            (row["max_error"], row[key]["median_seconds"])
            for row in levels
            if row[key] and row[key]["answers"]
        ]
        if points:
            axes.plot(*zip(*points, strict=True), style, color=colour, label=label, alpha=0.9)
    refused = [row["max_error"] for row in levels if row["router"]["answers"] == 0]
    for level in refused:
        axes.axvline(level, color="C3", alpha=0.3)
    missed = [
        (row["max_error"], row["router"]["median_seconds"])
        for row in levels
        if row["router"]["answers"] and row["router"]["coverage"] < SHARE
    ]
    if missed:
        axes.scatter(
            *zip(*missed, strict=True), s=120, marker="x", color="C3", label="router's coverage < 90%"
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.invert_xaxis()
    axes.set_xlabel("max_error (relative L2 a request accepts)")
    axes.set_ylabel("median wall time per answered sample [s] (1 thread)")
    axes.set_title(f"{family}: cost of a routed answer" + (" (red lines: refused)" if refused else ""))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    save_figure(figure, path)


# ----------------------------------------------------------------------------------------------------
# Run


@dataclass
class Family:
    """One family between the in-process part, the gRPC part and the report."""

    setup: Setup
    surrogate: Surrogate
    samples: payoff.Samples
    table: list[Candidate]
    local: dict[float, dict[str, list[Outcome]]]
    origin: dict
    surrogate_errors: list[float]
    seconds: float


def run_family(setup: Setup, args: argparse.Namespace, repo: Path, folder: Path) -> Family:
    """One family in process: its model published, its workload drawn, the oracle's table measured and
    the workload answered."""
    started = time.perf_counter()
    surrogate, params, origin = published(setup, Path(args.model_repo), repo, folder)
    side = surrogate.card.training_resolution[-1]
    fields = payoff.draw(setup.plan, params, args.seed)
    samples = payoff.samples_at(setup.plan, params, fields, side, surrogate)
    plane = InProcess(surrogate)
    try:
        table = candidates(plane, samples)
        local = in_process(plane, samples, table, args.seed)
    finally:
        plane.close()
    predicted = surrogate.forward(samples.x.astype(np.float32))
    errors = [true_error(predicted[i : i + 1], samples.y[i : i + 1]) for i in range(len(samples.x))]
    print(f"{setup.plan.family}: in process done ({time.perf_counter() - started:.0f} s)", flush=True)
    return Family(setup, surrogate, samples, table, local, origin, errors, time.perf_counter() - started)


def result_of(family: Family, remote: dict | None) -> dict:
    surrogate, plan = family.surrogate, family.setup.plan
    ledger = surrogate.card.ledger
    (entry,) = [e for e in ledger.entries if e.path == SURROGATE_PATH]
    return payoff.as_json(
        {
            "model": f"{surrogate.name} v{surrogate.version}",
            **family.origin,
            "side": surrogate.card.training_resolution[-1],
            "reference_resolution": plan.reference_resolution,
            "reference_time_step": plan.reference_time_step,
            "samples": len(family.samples.x),
            "ledger": ledger,
            "surrogate": {
                "entry": entry,
                "errors": family.surrogate_errors,
                "true_quantile": quantile(family.surrogate_errors),
            },
            "candidates": family.table,
            "levels": [
                level_row(level, family.local[level], remote and remote[level], family.table, ledger)
                for level in LEVELS
            ],
            "seconds": family.seconds,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="darcy-fno and a tiny Burgers model, 30 and 6 samples, in process only",
    )
    parser.add_argument("--families", help="comma-separated (default: every family of the mode)")
    parser.add_argument("--seed", type=int, default=20261207, help="root seed of the workload's samples")
    parser.add_argument("--model-repo", default="models")
    parser.add_argument(
        "--grpc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also through a Ray Serve application (default: yes, no with --quick)",
    )
    parser.add_argument(
        "--out", help="JSON (default bench/results/routing.json; --quick: routing-quick.json)"
    )
    parser.add_argument("--img-dir", help="PNG folder (default docs/img; --quick: none)")
    args = parser.parse_args()
    args.out = args.out or f"bench/results/routing{'-quick' * args.quick}.json"
    if args.img_dir is None and not args.quick:
        args.img_dir = "docs/img"
    if args.grpc is None:
        args.grpc = not args.quick
    torch.set_num_threads(1)
    chosen = [s for s in setups(args.quick) if not args.families or s.plan.family in args.families.split(",")]
    started = time.perf_counter()
    remote: dict[str, dict] = {}
    grpc_seconds = None
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repo"
        families = [run_family(s, args, repo, Path(folder)) for s in chosen]
        if args.grpc:
            grpc_started = time.perf_counter()
            from pdeserve.serving.client import SolverClient

            with serving(repo) as target, SolverClient(target, timeout=300) as client:
                wait_until_serving(client, families[0].surrogate, families[0].samples)
                for family in families:
                    name = family.setup.plan.family
                    remote[name] = through_grpc(client, family.surrogate, family.samples, args.seed)
                    print(f"{name}: gRPC done", flush=True)
            grpc_seconds = time.perf_counter() - grpc_started
    results = {f.setup.plan.family: result_of(f, remote.get(f.setup.plan.family)) for f in families}
    if args.img_dir:
        for family, result in results.items():
            plot(family, result["levels"], Path(args.img_dir) / f"routing-{family}.png")
    print_table(results)
    seconds = time.perf_counter() - started
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores ({platform.platform()})"
    load = os.getloadavg()
    print(
        f"\n{date.today()}, {machine}, torch threads {torch.get_num_threads()}; {seconds:.0f} s; load {load}"
    )
    write_results(
        args.out,
        {
            "date": str(date.today()),
            "machine": machine,
            "load_average_at_end": load,
            "args": vars(args),
            "grpc": {
                "measured": args.grpc,
                "why_not": None if args.grpc else NO_GRPC,
                "seconds": grpc_seconds,
            },
            "levels": list(LEVELS),
            "share": SHARE,
            "cost_goal": COST_GOAL,
            "seconds": seconds,
            "families": results,
        },
    )


if __name__ == "__main__":
    main()
