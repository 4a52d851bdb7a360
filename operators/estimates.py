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

from pdeserve.datagen.families import CLASSICAL, Refined
from pdeserve.datagen.families import REFINED as REFINED  # the answer paths, re-exported with SURROGATE
from pdeserve.operators.card import ErrorCalibration, ModelCard
from pdeserve.operators.family import family_and_parameters

SURROGATE = "surrogate"


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


# The name of the two-solution indicator of a time-dependent family (its stepper's coarse solve).
TWO_SOLUTION = "two-solution"


def indicator_name(card: ModelCard) -> str:
    """The name of the indicator that scores ``card``'s answers (``RefinementUnavailableError`` if none)."""
    family, _ = family_and_parameters(card)
    if card.time_map is not None and family.stepper is not None:
        return TWO_SOLUTION
    if card.time_map is None and family.indicator is not None:
        return family.indicator.name
    raise RefinementUnavailableError(f"no error indicator for {card.pde} models")


@dataclass(frozen=True)
class _Trajectory:
    """A time-mapped answer: the state it starts from, the times after it and the proposed states."""

    start: np.ndarray
    offsets: np.ndarray
    proposed: np.ndarray


def _trajectory(card: ModelCard, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]):
    family, params = family_and_parameters(card)
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


def has_rollout_estimate(card: ModelCard) -> bool:
    """Whether ``card``'s rollouts can be checked (a time-mapped model of a family with a stepper)."""
    if card.time_map is None:
        return False
    family, _ = family_and_parameters(card)
    return family.stepper is not None


def indicator(card: ModelCard, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> float:
    """The PDE family's a-posteriori indicator of one sample's answer (no batch axis): for a time-mapped
    model, ``inputs`` hold its input window and ``outputs`` its predicted states."""
    from pdeserve.datagen import indicators

    family, params = family_and_parameters(card)
    indicator_name(card)  # refuses a family without one
    if card.time_map is None:
        return float(family.indicator.score(params, inputs, outputs))
    path = _trajectory(card, inputs, outputs)
    coarse = family.stepper.coarse(params, path.start, path.offsets)
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

    family, params = family_and_parameters(card)
    offsets = _pass_offsets(card, family, params)
    coarse = family.stepper.coarse(params, check.coarse, offsets, check.coarse.shape[-1])
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

    family, params = family_and_parameters(card)
    offsets = _pass_offsets(card, family, params)
    advance = family.stepper.advance
    # Catching up covers every pass from the exact start, this one included; a fallen-back rollout goes on.
    state, passes = (check.start, check.passes + 1) if check.classical is None else (check.classical, 1)
    for _ in range(passes):
        if stop is not None and stop.is_set():
            raise RolloutStopped("the rollout ended before its classical solve")
        states = advance(params, state, offsets)
        state = states[-1]
    answer = {name: states[j] for j, name in enumerate(card.output_names)}
    return answer, dataclasses.replace(check, classical=state)


def refine(
    card: ModelCard,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    tolerance: float,
    max_iterations: int = 200,
) -> Refinement:
    """Improve one sample's answer until its relative residual is at most ``tolerance``.

    A family with a ``refine`` hook improves the answer with it (Darcy: AMG-preconditioned conjugate
    gradients from the answer; Helmholtz: ILU-preconditioned GMRES from the answer, the direct solve
    when it has not met the tolerance within ``max_iterations``). Any other family answers with its
    classical solver (path ``classical``, residual 0: the answer is the reference itself): a
    time-mapped model from its last input state over the output times, a steady one by its reference
    solve; that work is fixed by the grid and the family's settings.

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
    family, params = family_and_parameters(card)
    started = time.perf_counter()
    if card.time_map is not None:
        if family.stepper is None:
            raise RefinementUnavailableError(f"no refinement for {family.name} models")
        path = _trajectory(card, inputs, outputs)
        states = family.stepper.advance(params, path.start, path.offsets)
        answer = Refined({name: states[j] for j, name in enumerate(card.output_names)}, CLASSICAL, 0, 0.0)
    elif family.refine is not None:
        answer = family.refine(params, inputs, outputs, tolerance, max_iterations)
    elif family.reference is not None:
        solved = family.reference(params, inputs)
        answer = Refined({name: solved[name] for name in card.output_names}, CLASSICAL, 0, 0.0)
    else:
        raise RefinementUnavailableError(f"no refinement for {family.name} models")
    return Refinement(
        answer.outputs, answer.path, answer.iterations, answer.residual, time.perf_counter() - started
    )
