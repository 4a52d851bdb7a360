"""The check every answer carries: its error estimate, and refinement to a request's tolerance.

The numerics live in ``operators/estimates.py`` (an indicator per PDE family, the card's calibration,
refinement by an iterative solver); this module runs them for a request's samples on a bounded pool of
threads, apart from the replica's torch thread, within the limits below (grid points a refinement may
cover per sample and per request, iterations, seconds). An input a classical solver refuses (a
non-positive coefficient, a grid it cannot take: ``datagen.errors.SolverRefusal``) is an invalid argument
(serving/errors.py), for the estimate, a refinement and the reference solve alike, and so is an answer
that is not finite (an amplitude its time step does not resolve); any other failure of a solver is a bug
(INTERNAL). A model
whose PDE has no indicator yet answers without an estimate; a request for a tolerance on such a model is
refused (it asked for a guarantee the server cannot give).

A model without its classical solver here (its family's distribution is not installed, or it was trained
on imported data) answers with its solver-free estimate when its card has one
(``operators/solver_free_estimate.py``, loaded once per version beside the weights), else without an
estimate; so does a model whose family's estimate is not calibrated. What needs the solver (a tolerance,
the reference solve, a rollout held to an estimated error) is FAILED_PRECONDITION saying what is
missing. Each sample's check lists why its inputs lie outside the training data (its range, and with a
solver-free calibration its spectrum and distance).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pdeserve.operators import estimates
from pdeserve.operators.card import ModelCard
from pdeserve.operators.errors import FamilyUnavailableError
from pdeserve.operators.family import family_of
from pdeserve.operators.pairs import reference_outputs
from pdeserve.operators.repository import ModelRepository
from pdeserve.operators.solver_free_estimate import SolverFreeEstimator, load_estimator
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.serving.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)

if TYPE_CHECKING:
    from pdeserve.operators.surrogate import Surrogate

# Threads of a replica that compute estimates and refinements (apart from its torch thread).
CHECK_THREADS = 2
# Most grid points of one sample, and of all samples of one request, that a tolerance may refine.
MAX_REFINE_POINTS = 512 * 512
MAX_REFINE_REQUEST_POINTS = 4 * 512 * 512
# Iterations the refining solver may take per sample.
MAX_REFINE_ITERATIONS = 200
# Longest a request's refinement may take before it is answered DEADLINE_EXCEEDED.
REFINE_TIMEOUT_S = 30.0
# Longest a Rollout stream may run, classical fallback included.
ROLLOUT_TIMEOUT_S = 600.0
PATHS = {
    estimates.SURROGATE: pb.ANSWER_PATH_SURROGATE,
    estimates.REFINED: pb.ANSWER_PATH_REFINED,
    estimates.CLASSICAL: pb.ANSWER_PATH_CLASSICAL,
}
# Where an estimate comes from: the family's indicator, the solver-free estimate, or the ledger's
# recorded error of the classical path that answered.
INDICATOR, SOLVER_FREE, LEDGER = "indicator", "solver-free", "ledger"
METHODS = {
    INDICATOR: pb.ESTIMATE_METHOD_INDICATOR,
    SOLVER_FREE: pb.ESTIMATE_METHOD_SOLVER_FREE,
    LEDGER: pb.ESTIMATE_METHOD_LEDGER,
}
# Solver-free estimators a replica keeps loaded (small: principal directions and projections).
ESTIMATORS_PER_REPLICA = 32


@dataclass(frozen=True)
class SampleCheck:
    """One sample's answer after its check.

    Parameters
    ----------
    outputs : dict of str to ndarray
        The answer by output name (the surrogate's, or the refined one), no batch axis.
    estimate : Estimate or None
        The answer's indicator and estimate (None: the model's PDE has no indicator yet).
    path : str
        ``surrogate``, ``refined`` or ``classical`` (``operators/estimates.py``).
    iterations : int
        Iterations of the refining solver (0 when not refined).
    residual : float or None
        Relative residual of the answer, when the request asked for a tolerance.
    refine_seconds : float
        Time spent refining (0 when not refined).
    method : str
        Where the estimate comes from: ``indicator`` (the family's) or ``solver-free``.
    out_of_distribution : tuple of str
        Why the sample's inputs lie outside the training data (empty when they do not).
    """

    outputs: dict[str, np.ndarray]
    estimate: estimates.Estimate | None
    path: str = estimates.SURROGATE
    iterations: int = 0
    residual: float | None = None
    refine_seconds: float = 0.0
    method: str = INDICATOR
    out_of_distribution: tuple[str, ...] = ()
    rung: str = ""
    predicted_ms: float = 0.0
    measured_ms: float = 0.0

    def message(self) -> pb.AnswerCheck:
        """The ``AnswerCheck`` of this sample (non-finite numbers are left absent)."""
        check = pb.AnswerCheck(
            path=PATHS[self.path],
            refine_iterations=self.iterations,
            refine_ms=self.refine_seconds * 1e3,
            out_of_distribution=self.out_of_distribution,
            rung=self.rung,
            predicted_ms=self.predicted_ms,
            measured_ms=self.measured_ms,
        )
        if self.estimate is not None:
            check.estimate_method = METHODS[self.method]
            if math.isfinite(self.estimate.indicator):
                check.indicator = self.estimate.indicator
            relative_l2 = self.estimate.relative_l2
            if relative_l2 is not None and math.isfinite(relative_l2):
                check.estimated_relative_l2 = relative_l2
                check.coverage = self.estimate.coverage or 0.0
        if self.residual is not None:
            check.residual = self.residual
        return check


def requested_tolerance(value: float, field: str) -> float | None:
    """The tolerance a request asks for (None for 0, none); ``InvalidArgument`` naming ``field`` and the
    accepted range when it is negative, NaN or above 1."""
    if value == 0:
        return None
    if not 0 < value <= 1:
        raise InvalidArgument(
            f"{field} is {value}; ask for a relative residual in (0, 1], or 0 for no tolerance"
        )
    return value


def requested_max_error(value: float, field: str) -> float | None:
    """The largest estimated error a rollout asks for (None for 0, no limit); ``InvalidArgument`` naming
    ``field`` when it is negative, NaN or infinite."""
    if value == 0:
        return None
    if not 0 < value < math.inf:
        raise InvalidArgument(f"{field} is {value}; ask for a positive relative L2 error, or 0 for no limit")
    return value


def calibrated_rollouts(card: ModelCard) -> bool:
    """Whether ``card``'s rollouts carry calibrated estimates (a fallback can be held to them);
    ``FamilyUnavailableError`` naming what is missing when this server lacks the model's family."""
    family_of(card)
    return card.calibration is not None and estimates.has_rollout_estimate(card)


def grid_validated(card: ModelCard, sides: tuple[int, ...]) -> bool:
    """Whether every side of a grid lies in the model's validated range (False without validation)."""
    if card.validation is None:
        return False
    low, high = card.validation.validated_range()
    return all(low <= side <= high for side in sides)


def out_of_range_inputs(card: ModelCard, inputs: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the inputs with a value outside the field's range over the training samples."""
    return [r.name for r in _out_of_range(card, inputs)]


def _out_of_range(card: ModelCard, inputs: Mapping[str, np.ndarray]) -> list:
    """The training ranges (``ValueRange``) that a value of ``inputs`` lies outside."""
    return [
        r
        for r in card.input_ranges
        if r.name in inputs and (np.min(inputs[r.name]) < r.low or np.max(inputs[r.name]) > r.high)
    ]


def samples(arrays: Mapping[str, np.ndarray], batched: bool) -> list[dict[str, np.ndarray]]:
    """Per-sample dictionaries of arrays in a request's batch layout."""
    if not batched:
        return [dict(arrays)]
    n = len(next(iter(arrays.values())))
    return [{name: array[i] for name, array in arrays.items()} for i in range(n)]


def finite(arrays: Mapping[str, np.ndarray], work: str) -> dict[str, np.ndarray]:
    """``arrays``, the result of a classical solve (``work`` says which); ``InvalidArgument`` if one
    is not finite: the input lies beyond what the solver resolves (an explicit time step is stable up
    to some amplitude), and a NaN answer checks nothing."""
    blown = sorted(name for name, array in arrays.items() if not np.all(np.isfinite(array)))
    if blown:
        raise InvalidArgument(
            f"{work} of this input is not finite in {blown}: its amplitude is beyond what the classical "
            "solver resolves; send inputs in the model's training range (GetModel lists it)"
        )
    return dict(arrays)


def classical_reference(card: ModelCard, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The classical solver's answer for one sample (``reference_outputs``); ``InvalidArgument`` for an
    input the solver cannot take or whose solution it does not resolve, ``FailedPrecondition`` for a
    model without its solver here."""
    try:
        solved = reference_outputs(card, inputs)
    except FamilyUnavailableError as exc:
        raise FailedPrecondition(f"no classical reference: {exc}") from None
    return finite(solved, "the reference solve")


def estimate(
    card: ModelCard,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    solver_free: SolverFreeEstimator | None = None,
) -> SampleCheck:
    """The surrogate's answer checked: the family's estimate when it is calibrated here, else the
    solver-free one when the model has it, else the family's indicator alone, or none (no indicator, or
    no family here); ``InvalidArgument`` for an input the indicator's solver cannot take. The check
    lists why the inputs lie outside the training data."""
    try:
        estimates.indicator_name(card)  # before the PDE family is looked up
        found = estimates.estimate(card, inputs, outputs)
    except (estimates.RefinementUnavailableError, FamilyUnavailableError):
        found = None
    reasons = [
        f"{r.name}: values outside its training range [{r.low:g}, {r.high:g}]"
        for r in _out_of_range(card, inputs)
    ]
    if solver_free is None:
        return SampleCheck(dict(outputs), found, out_of_distribution=tuple(reasons))
    flagged = solver_free.check(inputs)
    reasons.extend(flagged.reasons)
    if found is not None and found.relative_l2 is not None:
        return SampleCheck(dict(outputs), found, out_of_distribution=tuple(reasons))
    calibration = solver_free.calibration
    free = estimates.Estimate(flagged.indicator, calibration.scale * flagged.indicator, calibration.coverage)
    return SampleCheck(dict(outputs), free, method=SOLVER_FREE, out_of_distribution=tuple(reasons))


def start_rollout(card: ModelCard, inputs: Mapping[str, np.ndarray]) -> estimates.RolloutCheck | None:
    """The check of one sample's rollout from its exact input window; None when the model's PDE has no
    rollout estimate (or is not installed here)."""
    try:
        return estimates.start_rollout(card, inputs)
    except (estimates.RefinementUnavailableError, FamilyUnavailableError):
        return None


def check_rollout_pass(
    card: ModelCard,
    check: estimates.RolloutCheck | None,
    outputs: dict[str, np.ndarray],
    max_error: float | None,
    stop: threading.Event | None = None,
) -> tuple[SampleCheck, estimates.RolloutCheck | None]:
    """One sample's check of a rollout's forward pass, and its rollout check after the pass
    (``estimates.rollout_estimate``); ``InvalidArgument`` when the classical solver refuses the state.

    With ``max_error``, a pass whose estimate is above it or absent (beyond the calibrated horizon) is
    answered by the classical solver instead (``estimates.classical_pass``), and so is every later one:
    path ``classical``, with the estimate of the classical states (which measures the coarse solve's
    own difference, and may be above ``max_error``). ``stop`` ends the classical solve between passes."""
    if check is None:
        return SampleCheck(outputs, None), None
    if check.classical is None:
        estimate, after = estimates.rollout_estimate(card, check, outputs)
        if max_error is None or (estimate.relative_l2 is not None and estimate.relative_l2 <= max_error):
            return SampleCheck(outputs, estimate), after
    started = time.perf_counter()
    outputs, fallen_back = estimates.classical_pass(card, check, stop)
    seconds = time.perf_counter() - started
    estimate, after = estimates.rollout_estimate(card, fallen_back, outputs)
    finite(outputs, "the classical solve of the rollout")
    return SampleCheck(outputs, estimate, estimates.CLASSICAL, refine_seconds=seconds), after


def check_sample(
    card: ModelCard,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    tolerance: float | None,
    max_iterations: int,
    solver_free: SolverFreeEstimator | None = None,
) -> SampleCheck:
    """One sample's check: with a tolerance, the answer is refined until its relative residual meets it
    (an answer that already does stays the surrogate's); then the estimate of the returned answer."""
    if tolerance is None:
        return estimate(card, inputs, outputs, solver_free)
    try:
        refined = estimates.refine(card, inputs, outputs, tolerance, max_iterations)
    except (estimates.RefinementUnavailableError, FamilyUnavailableError) as exc:
        raise FailedPrecondition(f"cannot refine to a tolerance: {exc}") from None
    finite(refined.outputs, "refining the answer")
    if refined.iterations == 0 and refined.path == estimates.REFINED:  # met it already
        return dataclasses.replace(estimate(card, inputs, outputs, solver_free), residual=refined.residual)
    return dataclasses.replace(
        estimate(card, inputs, refined.outputs, solver_free),
        path=refined.path,
        iterations=refined.iterations,
        residual=refined.residual,
        refine_seconds=refined.seconds,
    )


def bound_refinement(outputs: Mapping[str, np.ndarray], batched: bool) -> None:
    """``ResourceExhausted`` when refining ``outputs`` would cover more grid points than the limits."""
    array = next(iter(outputs.values()))
    bound_classical_work(math.prod(array.shape[1:] if batched else array.shape), array.size, "no tolerance")


def bound_classical_work(per_sample: int, total: int, instead: str) -> None:
    """``ResourceExhausted`` when a request's classical work (a refinement, a rollout's fallback) would
    cover more grid points, ``per_sample`` and ``total``, than the refinement limits; ``instead`` names
    the request's way out."""
    if per_sample > MAX_REFINE_POINTS or total > MAX_REFINE_REQUEST_POINTS:
        raise ResourceExhausted(
            f"refining {total} grid points ({per_sample} per sample) is above this server's limits "
            f"of {MAX_REFINE_POINTS} per sample and {MAX_REFINE_REQUEST_POINTS} per request; send fewer "
            f"samples per request, a coarser grid, or {instead}"
        )


class Checker:
    """Runs the checks of a replica's answers on :data:`CHECK_THREADS` threads.

    Parameters
    ----------
    repository : ModelRepository, optional
        Where the versions' solver-free statistics are read from (None: no solver-free estimates).
    """

    def __init__(self, repository: ModelRepository | None = None) -> None:
        self._pool = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="pdeserve-check")
        self._repository = repository
        self._estimators: collections.OrderedDict[tuple[str, str], SolverFreeEstimator | None] = (
            collections.OrderedDict()
        )

    def _load_estimator(self, surrogate: Surrogate) -> SolverFreeEstimator | None:
        if self._repository is None or surrogate.card.solver_free is None:
            return None
        folder = self._repository.resolve(surrogate.name, surrogate.version)[1]
        return load_estimator(folder, surrogate.card)

    async def solver_free(self, surrogate: Surrogate) -> SolverFreeEstimator | None:
        """The solver-free estimator of ``surrogate``'s version (None when its card has none), read once
        on the pool and kept for the :data:`ESTIMATORS_PER_REPLICA` most recently used versions;
        ``CheckpointError`` when its statistics file is damaged."""
        key = (surrogate.name, surrogate.version)
        if key not in self._estimators:
            loaded = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._load_estimator, surrogate
            )
            self._estimators[key] = loaded
            while len(self._estimators) > ESTIMATORS_PER_REPLICA:
                self._estimators.popitem(last=False)
        self._estimators.move_to_end(key)
        return self._estimators[key]

    async def check(
        self,
        surrogate: Surrogate,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
        batched: bool,
        tolerance: float | None,
    ) -> list[SampleCheck]:
        """Every sample's check of ``surrogate``'s answer, in the batch's order. With a tolerance,
        ``ResourceExhausted`` above the size limits and ``DeadlineExceeded`` past the time limit (the
        solver's iterations are bounded too, so abandoned work ends)."""
        if tolerance is not None:
            bound_refinement(outputs, batched)
        pairs = zip(samples(inputs, batched), samples(outputs, batched), strict=True)
        solver_free = await self.solver_free(surrogate)
        work = self._each(check_sample, surrogate.card, pairs, tolerance, MAX_REFINE_ITERATIONS, solver_free)
        if tolerance is None:
            return list(await work)
        try:
            return list(await asyncio.wait_for(work, REFINE_TIMEOUT_S))
        except TimeoutError:
            raise DeadlineExceeded(
                f"refining to tolerance {tolerance:g} took longer than this server's limit of "
                f"{REFINE_TIMEOUT_S:g} s; ask for a looser tolerance or send fewer samples"
            ) from None

    async def start_rollout(
        self, card: ModelCard, inputs: Mapping[str, np.ndarray], batched: bool
    ) -> list[estimates.RolloutCheck | None]:
        """Every sample's rollout check from its exact input window, in the batch's order."""
        return list(await self._each(start_rollout, card, ((x,) for x in samples(inputs, batched))))

    async def check_rollout_pass(
        self,
        card: ModelCard,
        rollouts: list[estimates.RolloutCheck | None],
        outputs: Mapping[str, np.ndarray],
        batched: bool,
        max_error: float | None,
        stop: threading.Event,
        seconds: float,
    ) -> tuple[list[SampleCheck], list[estimates.RolloutCheck | None]]:
        """Every sample's check of a rollout's forward pass (the classical solver's states where it falls
        back, :func:`check_rollout_pass`), and the rollout checks after it; with ``max_error``, within
        ``seconds`` (``DeadlineExceeded`` after them). ``stop`` is the rollout's, set by its caller when
        it ends."""
        pairs = zip(rollouts, samples(outputs, batched), strict=True)
        work = self._each(check_rollout_pass, card, pairs, max_error, stop)
        if max_error is None:  # estimates only: one coarse solve per sample, bounded by the grid limits
            done = await work
        else:
            try:
                done = await asyncio.wait_for(work, max(seconds, 0.0))
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the rollout ran past this server's limit of {ROLLOUT_TIMEOUT_S:g} s in a pass's check "
                    "(its classical fallback included); continue it from the last state in another "
                    "request, or ask for a coarser grid or a larger max_estimated_error"
                ) from None
        return [check for check, _ in done], [after for _, after in done]

    def _each(
        self, check: Callable[..., Any], card: ModelCard, per_sample: Iterable[tuple], *shared: Any
    ) -> asyncio.Future:
        """``check(card, *sample, *shared)`` for every ``sample`` of ``per_sample`` on the pool, gathered
        in the batch's order."""
        loop = asyncio.get_running_loop()
        return asyncio.gather(
            *(loop.run_in_executor(self._pool, check, card, *sample, *shared) for sample in per_sample)
        )


@dataclass(frozen=True)
class Answer:
    """A checked answer to an inference request.

    Parameters
    ----------
    outputs : dict of str to ndarray
        The answer by output name in the inputs' batch layout, refined samples' answers in place of
        the surrogate's; float32, or float64 when the request asked for a tolerance.
    checks : list of SampleCheck
        One per sample, in the batch's order.
    grid_validated : bool
        Whether the grid lies in the model's validated range.
    out_of_range_inputs : list of str
        Inputs with a value outside their training range.
    """

    outputs: dict[str, np.ndarray]
    checks: list[SampleCheck]
    grid_validated: bool
    out_of_range_inputs: list[str]


def answer(
    card: ModelCard,
    inputs: Mapping[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    batched: bool,
    checks: list[SampleCheck],
    tolerance: float | None,
) -> Answer:
    """The answer of a request whose samples were checked: refined samples replace the surrogate's.
    With a tolerance the outputs are float64, so that the numbers returned meet the residual reported
    (float32 rounding alone would move it by about 1e-7 times the condition number)."""
    if tolerance is not None:
        outputs = {
            name: np.stack([c.outputs[name] for c in checks]).astype(np.float64)
            if batched
            else checks[0].outputs[name].astype(np.float64)
            for name in outputs
        }
    sides = next(iter(outputs.values())).shape[-card.ndim :]
    return Answer(outputs, checks, grid_validated(card, sides), out_of_range_inputs(card, inputs))
