"""Checked answers: an a-posteriori error estimate for every surrogate answer, and refinement to a tolerance.

:func:`indicator` scores one sample's answer with its PDE family's indicator (``datagen/indicators.py``
says which and why); a model card's :class:`~pdeserve.operators.card.ErrorCalibration` turns it into an
estimated relative L2 error with a stated coverage (:func:`estimate`). :func:`refine` improves an answer
to a tolerance: for Darcy, conjugate gradients preconditioned by smoothed-aggregation algebraic
multigrid (pyamg), and for Helmholtz, ILU-preconditioned GMRES, both started from the surrogate's answer,
so the solver's guarantee holds whatever the surrogate did; for the time-dependent families, the
classical solver. Every refinement's work is bounded. All are plain functions of (card, inputs, outputs),
used by the server and by calibration at publish time."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pdeserve.operators.card import ErrorCalibration, ModelCard

SURROGATE, REFINED, CLASSICAL = "surrogate", "refined", "classical"


@dataclass(frozen=True)
class Estimate:
    """An answer's indicator and, when the model is calibrated, its error estimate.

    Parameters
    ----------
    indicator : float
        The family's a-posteriori indicator of the answer.
    relative_l2 : float or None
        Estimated relative L2 error (None: the model has no calibration).
    coverage : float or None
        Probability, on the model's calibration distribution, that the true error is at most the estimate.
    """

    indicator: float
    relative_l2: float | None
    coverage: float | None


@dataclass(frozen=True)
class Refinement:
    """A refined answer.

    Parameters
    ----------
    outputs : dict of str to ndarray
        The answer, keyed by output name (one sample, no batch axis).
    path : str
        ``refined`` (an iterative solver from the surrogate's answer) or ``classical`` (a solve that
        ignores it).
    iterations : int
        Solver iterations (0 for a direct solve).
    residual : float
        Relative residual reached.
    seconds : float
        Time the refinement took.
    """

    outputs: dict[str, np.ndarray]
    path: str
    iterations: int
    residual: float
    seconds: float


class RefinementUnavailableError(ValueError):
    """The model's PDE family has no refinement (or no indicator)."""


# The indicator each PDE family's answers are scored with (recorded in a calibration).
INDICATORS = {
    "darcy": "preconditioned-residual",
    "helmholtz": "relative-residual",
    "burgers": "two-solution",
    "navier-stokes": "two-solution",
}


def _family_and_parameters(card: ModelCard):
    from pdeserve.datagen.families import get_family

    family = get_family(card.pde)
    return family, family.parameters_from(card.pde_parameters)


def indicator_name(card: ModelCard) -> str:
    """The name of the indicator that scores ``card``'s answers (``RefinementUnavailableError`` if none)."""
    try:
        return INDICATORS[card.pde]
    except KeyError:
        raise RefinementUnavailableError(f"no error indicator for {card.pde} models") from None


@dataclass(frozen=True)
class _Trajectory:
    """A time-mapped answer: the state it starts from, the times after it and the proposed states."""

    start: np.ndarray
    offsets: np.ndarray
    proposed: np.ndarray


def _trajectory(card: ModelCard, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]):
    family, params = _family_and_parameters(card)
    if card.time_map is None:
        raise RefinementUnavailableError(f"a {card.pde} model without a time map has no start state")
    return _Trajectory(
        np.asarray(inputs[card.input_names[-1]], dtype=np.float64),
        _pass_offsets(card, family, params),
        _proposed(card, outputs),
    )


def _proposed(card: ModelCard, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """A time-mapped answer's states, stacked in time order, float64."""
    return np.stack([np.asarray(outputs[name], dtype=np.float64) for name in card.output_names])


def _coarse_solve(family_name: str):
    """The two-solution estimator's coarse solver of a time-dependent family."""
    from pdeserve.datagen import indicators

    return indicators.burgers_coarse if family_name == "burgers" else indicators.navier_stokes_coarse


def _advance(family_name: str):
    """The classical solver of a time-dependent family on its input's own grid."""
    from pdeserve.datagen import indicators

    return indicators.burgers_advance if family_name == "burgers" else indicators.navier_stokes_advance


def has_rollout_estimate(card: ModelCard) -> bool:
    """Whether ``card``'s rollouts can be checked (a time-mapped model of a two-solution family)."""
    return card.time_map is not None and INDICATORS.get(card.pde) == "two-solution"


def _helmholtz_system(params, c: np.ndarray):
    """``(matrix, load, resolved)``: the finite-element system of the Helmholtz problem on ``c``'s grid,
    and whether the reference solves that very system (the grid resolves the wavelength, as the
    benchmark's 101 x 101 does) rather than a finer one it subsamples."""
    from pdeserve.datagen.grids import UnitSquareGrid
    from pdeserve.datagen.helmholtz import HelmholtzSolver, benchmark_load

    grid = UnitSquareGrid(c.shape[-1])
    matrix = HelmholtzSolver(grid, params.omega).matrix(c).tocsr()
    resolved = grid.n - 1 >= params.min_solve_cells() and params.solve_resolution in (None, grid.n)
    return matrix, benchmark_load(params, grid).ravel(), resolved


def indicator(card: ModelCard, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> float:
    """The PDE family's a-posteriori indicator of one sample's answer (no batch axis): for a time-mapped
    model, ``inputs`` hold its input window and ``outputs`` its predicted states."""
    from pdeserve.datagen import indicators

    family, params = _family_and_parameters(card)
    indicator_name(card)  # refuses a family without one
    if family.name == "darcy":
        return indicators.darcy_indicator(inputs["a"], outputs["u"], params.forcing)
    if family.name == "helmholtz":
        matrix, load, _ = _helmholtz_system(params, np.asarray(inputs["c"], dtype=np.float64))
        return indicators.linear_residual(matrix, outputs["u"], load)
    path = _trajectory(card, inputs, outputs)
    coarse = _coarse_solve(family.name)(params, path.start, path.offsets)
    return indicators.two_solution(path.proposed, coarse, card.ndim)


def estimate(
    card: ModelCard, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> Estimate:
    """The indicator of one sample's answer and, if the card is calibrated, its error estimate."""
    value = indicator(card, inputs, outputs)
    calibration: ErrorCalibration | None = card.calibration
    if calibration is None:
        return Estimate(value, None, None)
    return Estimate(value, calibration.scale * value, calibration.coverage)


@dataclass(frozen=True)
class RolloutCheck:
    """Where the check of one sample's rollout stands: the classical solution, on the two-solution
    estimator's coarse grid, from the rollout's exact start to the time of its newest state.

    Parameters
    ----------
    coarse : ndarray
        The classical state on the coarse grid (float64).
    start : ndarray
        The rollout's exact start state on its own grid (float64), from which a fallback solves.
    passes : int
        Forward passes checked so far.
    classical : ndarray or None
        Once the rollout has fallen back to the classical solver (:func:`classical_pass`): its state at
        the time of the newest pass, on the rollout's grid; None while the surrogate answers.
    """

    coarse: np.ndarray
    start: np.ndarray
    passes: int = 0
    classical: np.ndarray | None = None


def start_rollout(card: ModelCard, inputs: Mapping[str, np.ndarray]) -> RolloutCheck:
    """The check of a rollout from the exact input window ``inputs`` (one sample, no batch axis), before
    its first forward pass; ``RefinementUnavailableError`` for a model whose PDE has no two-solution
    indicator."""
    from pdeserve.datagen import indicators

    if not has_rollout_estimate(card):
        raise RefinementUnavailableError(f"{card.pde} models have no rollout estimate")
    start = np.asarray(inputs[card.input_names[-1]], dtype=np.float64)
    coarse = indicators.resample_periodic(start, indicators.coarse_side(start.shape[-1]), card.ndim)
    return RolloutCheck(coarse, start)


def rollout_estimate(
    card: ModelCard, check: RolloutCheck, outputs: Mapping[str, np.ndarray]
) -> tuple[Estimate, RolloutCheck]:
    """The estimate of a rollout's next forward pass (``outputs``: its states, one sample), and the check
    after it.

    Along a rollout each pass reads earlier predictions, so its error is the error it adds plus the
    error it inherits. The indicator therefore compares the states with the classical coarse solution
    from the rollout's exact start (carried along in ``check``, one coarse solve per pass as for a
    single answer), not from the predicted states the pass read. The first pass's indicator is the
    one-step indicator, estimated with the card's calibration; later passes use its rollout calibration
    up to that calibration's horizon and carry no estimate beyond it (the indicator alone).
    """
    from pdeserve.datagen import indicators

    family, params = _family_and_parameters(card)
    offsets = _pass_offsets(card, family, params)
    coarse = _coarse_solve(family.name)(params, check.coarse, offsets, check.coarse.shape[-1])
    value = indicators.two_solution(_proposed(card, outputs), coarse, card.ndim)
    passes = check.passes + 1
    # Later passes' estimates extend the first's: none without it (as ModelInfo reports).
    calibration = card.calibration if passes == 1 or card.calibration is None else card.rollout_calibration
    after = dataclasses.replace(check, coarse=coarse[-1], passes=passes)
    if calibration is None or passes > calibration.steps:
        return Estimate(value, None, None), after
    return Estimate(value, calibration.scale * value, calibration.coverage), after


def _pass_offsets(card: ModelCard, family, params) -> np.ndarray:
    """The times of one forward pass's states after the newest state it reads."""
    times = family.state_times(params, card.training_resolution[-1])
    k, m = card.time_map.input_steps, len(card.output_names)
    return times[k : k + m] - times[k - 1]


class RolloutStopped(RuntimeError):
    """The rollout a classical solve was for has ended (its client went away or its time ran out)."""


def classical_pass(
    card: ModelCard, check: RolloutCheck, stop: threading.Event | None = None
) -> tuple[dict[str, np.ndarray], RolloutCheck]:
    """The classical solver's states for a rollout's next forward pass, on the rollout's grid, and the
    check with its classical state (before the pass is estimated: ``check.passes`` is the passes done).

    The first call solves from the rollout's exact start over every pass so far (the surrogate's states
    are dropped, errors and all); later calls continue from the classical state. The solver and its step
    are those of the classical answer to a single request (:func:`refine`). The solve goes a pass at a
    time and raises ``RolloutStopped`` between passes once ``stop`` is set, so abandoned work ends within
    a pass."""

    family, params = _family_and_parameters(card)
    offsets = _pass_offsets(card, family, params)
    advance = _advance(family.name)
    # Catching up covers every pass from the exact start, this one included; a fallen-back rollout goes on.
    state, passes = (check.start, check.passes + 1) if check.classical is None else (check.classical, 1)
    for _ in range(passes):
        if stop is not None and stop.is_set():
            raise RolloutStopped("the rollout ended before its classical solve")
        states = advance(params, state, offsets)
        state = states[-1]
    answer = {name: states[j] for j, name in enumerate(card.output_names)}
    return answer, dataclasses.replace(check, classical=state)


# Inner iterations of GMRES between restarts.
GMRES_RESTART = 50


class _Counter:
    """An iterative solver's callback that counts its iterations."""

    def __init__(self) -> None:
        self.iterations = 0

    def __call__(self, _: object) -> None:
        self.iterations += 1


def refine(
    card: ModelCard,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    tolerance: float,
    max_iterations: int = 200,
) -> Refinement:
    """Improve one sample's answer until its relative residual is at most ``tolerance``.

    Darcy: conjugate gradients preconditioned by smoothed-aggregation AMG, from the answer. Helmholtz:
    restarted GMRES preconditioned by an incomplete LU factorisation, from the answer; if it has not
    met the tolerance within ``max_iterations``, the direct sparse LU solve (path ``classical``).
    Burgers and Navier-Stokes: the classical solver from the last input state over the output times
    (path ``classical``, residual 0: the answer is the reference itself; its work is fixed by the grid
    and the dataset's time step).

    Parameters
    ----------
    card : ModelCard
        The model that answered.
    inputs, outputs : mapping of str to ndarray
        The sample's inputs and the surrogate's answer (no batch axis).
    tolerance : float
        Relative residual ``||f - A u|| / ||f||`` to reach, in (0, 1].
    max_iterations : int
        Bound on the iterative solver's iterations (the work a request can cause).
    """
    if not 0.0 < tolerance <= 1.0:
        raise ValueError(f"tolerance must be in (0, 1], got {tolerance}")
    family, params = _family_and_parameters(card)
    started = time.perf_counter()
    if family.name == "darcy":
        answer = _refine_darcy(params, inputs, outputs, tolerance, max_iterations)
    elif family.name == "helmholtz":
        answer = _refine_helmholtz(params, inputs, outputs, tolerance, max_iterations)
    elif family.name in ("burgers", "navier-stokes"):
        answer = _classical_trajectory(card, family.name, params, inputs, outputs)
    else:
        raise RefinementUnavailableError(f"no refinement for {family.name} models")
    return dataclasses.replace(answer, seconds=time.perf_counter() - started)


def _refine_darcy(params, inputs, outputs, tolerance: float, max_iterations: int) -> Refinement:
    import pyamg
    import scipy.sparse.linalg as spla

    from pdeserve.datagen.darcy import assemble_darcy
    from pdeserve.datagen.grids import UnitSquareGrid

    a = np.asarray(inputs["a"], dtype=np.float64)
    if not np.all(np.isfinite(a)) or a.min() <= 0:
        raise ValueError("the Darcy coefficient must be finite and strictly positive to refine")
    n = a.shape[-1]
    matrix = assemble_darcy(a, UnitSquareGrid(n)).tocsr()
    rhs = np.full(matrix.shape[0], float(params.forcing))
    guess = np.asarray(outputs["u"], dtype=np.float64)[1:-1, 1:-1].ravel()
    preconditioner = pyamg.smoothed_aggregation_solver(matrix, symmetry="hermitian").aspreconditioner()
    counter = _Counter()
    solution, _ = spla.cg(
        matrix, rhs, x0=guess, rtol=tolerance, maxiter=max_iterations, M=preconditioner, callback=counter
    )
    residual = float(np.linalg.norm(rhs - matrix @ solution) / np.linalg.norm(rhs))
    u = np.zeros((n, n))
    u[1:-1, 1:-1] = solution.reshape(n - 2, n - 2)
    return Refinement({"u": u}, REFINED, counter.iterations, residual, 0.0)


def _refine_helmholtz(params, inputs, outputs, tolerance: float, max_iterations: int) -> Refinement:
    import scipy.sparse.linalg as spla

    from pdeserve.datagen.helmholtz import helmholtz_reference
    from pdeserve.datagen.indicators import linear_residual

    c = np.asarray(inputs["c"], dtype=np.float64)
    matrix, load, resolved = _helmholtz_system(params, c)
    if not resolved:  # the reference solves a finer grid: only its solve gives the reference's answer
        return Refinement({"u": helmholtz_reference(params, c)}, CLASSICAL, 0, 0.0, 0.0)
    counter = _Counter()
    try:
        # This drop tolerance keeps the ILU of the indefinite matrix an accurate approximate inverse
        # (GMRES then needs a few iterations); 1e-4 stalls at the benchmark's frequency.
        factor = spla.spilu(matrix.tocsc(), drop_tol=1e-5, fill_factor=20)
        solution, info = spla.gmres(
            matrix,
            load,
            x0=np.asarray(outputs["u"], dtype=np.float64).ravel(),
            rtol=tolerance,
            restart=min(GMRES_RESTART, max_iterations),
            maxiter=max(1, max_iterations // GMRES_RESTART),
            M=spla.LinearOperator(matrix.shape, factor.solve),
            callback=counter,
            callback_type="pr_norm",
        )
    except RuntimeError:  # a singular incomplete factor
        info = 1
    path = REFINED
    if info != 0 or linear_residual(matrix, solution, load) > tolerance:
        lu = spla.splu(matrix.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1)
        solution, path = lu.solve(load), CLASSICAL
    u = solution.reshape(c.shape)
    residual = linear_residual(matrix, u, load)
    return Refinement({"u": u}, path, counter.iterations if path == REFINED else 0, residual, 0.0)


def _classical_trajectory(card: ModelCard, name: str, params, inputs, outputs) -> Refinement:
    path = _trajectory(card, inputs, outputs)
    states = _advance(name)(params, path.start, path.offsets)
    answer = {output: states[j] for j, output in enumerate(card.output_names)}
    return Refinement(answer, CLASSICAL, 0, 0.0, 0.0)
