"""What a model card promises about its errors, measured: across grid sides, and per answer.

- :func:`validate_resolutions`: the model's error on fresh samples, drawn with its PDE family's own
  sampler and solved classically at each side of :func:`sweep_sides` (half to four times the training
  side, odd and even, the sides the architecture accepts; up to twice it for the time-dependent families,
  whose classical reference costs a time integration per sample), so a server can tell a validated grid
  from an extrapolation.
- :func:`calibrate`: split-conformal calibration of the family's a-posteriori indicator
  (``operators/estimates.py``) on held-out samples, so ``scale * indicator`` bounds the true relative L2
  error with the stated coverage on exchangeable samples.
- :func:`calibrate_rollout`: the same for the estimate along a time-mapped model's rollout, over a
  horizon of forward passes on fresh trajectories.
- :func:`input_ranges`: each input field's range over the training samples.
- :func:`calibrate_without_solver`: for a model without a classical solver (trained on imported data),
  the solver-free estimate (``operators/solver_free_estimate.py``) calibrated on the held-out split of
  the training data its lineage records, its coverage measured on other held-out pairs.
- :func:`publish_validated`: all of them for a published version, republished with the same weights.

Fresh samples come from seed sequences ``[VALIDATION_STREAM, seed, side, i]``; datasets use
``[seed, i]``, so no validation sample repeats a training sample.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pdeserve.datagen.dataset import LoadedDataset
from pdeserve.datagen.families import Rung
from pdeserve.datagen.ladders import ladder_parameters
from pdeserve.operators import estimates, solver_free_estimate
from pdeserve.operators.card import (
    REFERENCE_PATH,
    RUNG_PATH,
    SURROGATE_PATH,
    ErrorCalibration,
    Ledger,
    LedgerEntry,
    Lineage,
    ModelCard,
    ResolutionValidation,
    SideError,
    TimeMap,
    ValueRange,
)
from pdeserve.operators.evaluation import predict_pairs, relative_l2
from pdeserve.operators.pairs import OperatorPairs, operator_pairs, rollout_times, stack_fields
from pdeserve.operators.resolution import ResolutionRule
from pdeserve.operators.surrogate import Surrogate

# First word of every validation seed sequence (datasets seed with two words, [seed, i]).
VALIDATION_STREAM = 0x5EED_CA1
# A side is validated when its error is at most this many times the training side's.
MAX_FACTOR = 2.0
# Fresh trajectories, and forward passes of the horizon, that calibrate a time-mapped model's rollout
# estimate. Their cost grows with the horizon's states (passes x output steps): the 64 x 64
# Navier-Stokes benchmark's 20 trajectories to t = 49 take about a minute on 2 cores.
ROLLOUT_SAMPLES, ROLLOUT_STEPS = 20, 40
# Largest side of a sweep, in training sides: steady families, and time-dependent ones (a time
# integration per sample for the reference).
MAX_MULTIPLE, MAX_MULTIPLE_TIME_DEPENDENT = 4.0, 2.0
# Fresh samples of a ledger, and the fewest of them the reference solve answers (for a time-mapped model
# it integrates from the first input state, the costliest path by far; its error is the floor); it answers
# more of them, up to all, where they fit in LEDGER_REFERENCE_BUDGET_S: a 0.9 quantile of 4 samples is
# their largest, which can lie below what the same solve records as a rung on all of them.
LEDGER_SAMPLES, LEDGER_REFERENCE_SAMPLES, LEDGER_REFERENCE_BUDGET_S = 30, 4, 20.0
# The finest solve grid side a ledger's reference is refined to beyond twice the family's own: a family's
# larger reference_refinement is halved until the grid fits (a 2D direct solve on 513 x 513 nodes takes
# about 1.4 s here; on 2041, for a model trained at 256, a minute and gigabytes).
MAX_FINER_SIDE = 513


def sweep_sides(
    training_side: int, rule: ResolutionRule, max_multiple: float = MAX_MULTIPLE
) -> tuple[int, ...]:
    """The grid sides a validation measures: half to ``max_multiple`` times the training side, each
    doubling's even and odd neighbours (64: 32, 33, 48, 63, 64, 65, 96, 127, 128, 129, 192, 255, 256),
    those ``rule`` accepts.

    Parameters
    ----------
    training_side : int
        The side the model was trained on (always included).
    rule : ResolutionRule
        The sides the architecture accepts.
    max_multiple : float
        Largest side, in training sides.
    """
    t = training_side
    candidates = {t // 2, t // 2 + 1, 3 * t // 4, t - 1, t, t + 1, 3 * t // 2, 3 * t, 4 * t - 1, 4 * t}
    candidates |= {2 * t - 1, 2 * t, 2 * t + 1}
    return tuple(sorted(s for s in candidates if s <= max_multiple * t and s >= 2 and rule.accepts(s)))


def _parameters_at(family, params, training_side: int, side: int):
    """The card's PDE parameters for samples at ``side``: the solve grid as many times finer than the
    output grid as at the training side (periodic grids nest by ``n``, node grids by ``n - 1``), and for a
    time-dependent family the card's time step capped at the largest its solver accepts on that grid."""
    solve = getattr(params, "solve_resolution", None)
    if solve is not None:
        if family.boundary == "periodic":
            solve = side * max(1, solve // training_side)
        else:
            solve = (side - 1) * max(1, (solve - 1) // (training_side - 1)) + 1
        params = dataclasses.replace(params, solve_resolution=solve)
    # The card's step was checked at the training side only; a finer grid has faster modes, for which
    # the explicit step may be unstable, and a smaller step only makes the reference more accurate.
    stable = getattr(params, "with_stable_time_step", None)
    if stable is not None:
        params = stable(side)
    return params.for_resolution(side)


def fresh_samples(family, params, side: int, n_samples: int, seed: int) -> LoadedDataset:
    """``n_samples`` new samples of ``family`` at ``side``, in memory, from the validation seed stream."""
    rngs = [
        np.random.default_rng(np.random.SeedSequence([VALIDATION_STREAM, seed, side, i]))
        for i in range(n_samples)
    ]
    fields = family.sample(params, side, rngs)
    inputs, outputs = [f.name for f in family.inputs], [f.name for f in family.outputs]
    attrs = {
        "pde": family.name,
        "parameters_json": json.dumps(params.as_dict()),
        "input_fields": inputs,
        "output_fields": outputs,
    }
    return LoadedDataset(attrs, {k: fields[k] for k in inputs}, {k: fields[k] for k in outputs})


def finer_reference(params, side: int, boundary: str, factor: int = 2):
    """``params`` (at ``side``) with the reference solved ``factor`` times as finely, in space and in
    time, where its parameters say how: a ``solve_resolution`` (None: the data grid) or a grid
    ``refinement``, and a ``time_step``. None when they say neither, or when the family refuses the finer
    settings (a grid above its limit): the family's own reference is then the finest known."""
    changes: dict[str, Any] = {}
    if hasattr(params, "solve_resolution"):
        solve = params.solve_resolution or side
        changes["solve_resolution"] = factor * solve if boundary == "periodic" else factor * (solve - 1) + 1
    elif isinstance(getattr(params, "refinement", None), int | float):
        changes["refinement"] = type(params.refinement)(factor * params.refinement)
    if getattr(params, "time_step", None) is not None:
        changes["time_step"] = params.time_step / factor
    if not changes:
        return None
    try:
        return dataclasses.replace(params, **changes).for_resolution(side)
    except ValueError:  # SolverRefusal included
        return None


def ledger_reference(family, params, side: int):
    """``params`` (at ``side``) with the reference a ledger measures against: solved the family's
    ``reference_refinement`` times as finely (:func:`finer_reference`), that factor halved until the
    solve grid is within ``MAX_FINER_SIDE``; ``params`` itself where the family allows no finer one."""
    factor = family.reference_refinement
    fine = finer_reference(params, side, family.boundary, factor)
    while factor > 2 and fine is not None and (getattr(fine, "solve_resolution", 0) or 0) > MAX_FINER_SIDE:
        factor //= 2
        fine = finer_reference(params, side, family.boundary, factor)
    return fine or params


def validation_samples(
    surrogate: Surrogate, side: int, n_samples: int, seed: int, finer: bool = False
) -> OperatorPairs:
    """Fresh operator pairs for ``surrogate`` at ``side`` (its family's sampler and classical solver;
    ``finer``: the reference a ledger measures against, :func:`ledger_reference`)."""
    from pdeserve.operators.family import family_of

    card = surrogate.card
    family = family_of(card)
    params = _parameters_at(
        family, family.parameters_from(card.pde_parameters), card.training_resolution[-1], side
    )
    if finer:
        params = ledger_reference(family, params, side)
    return operator_pairs(fresh_samples(family, params, side, n_samples, seed), card.time_map)


def validate_resolutions(
    surrogate: Surrogate, n_samples: int, seed: int, sides: Sequence[int] | None = None
) -> ResolutionValidation:
    """The model's mean relative L2 error on ``n_samples`` fresh samples at each side of the sweep.

    Parameters
    ----------
    surrogate : Surrogate
        The model.
    n_samples : int
        Fresh samples per side.
    seed : int
        Seeds the samples (with the validation stream, disjoint from any dataset's).
    sides : sequence of int, optional
        Sides to measure (default: :func:`sweep_sides`, up to twice the training side for a
        time-dependent model).
    """
    training_side = surrogate.card.training_resolution[-1]
    if sides is None:
        multiple = MAX_MULTIPLE if surrogate.card.time_map is None else MAX_MULTIPLE_TIME_DEPENDENT
        sides = sweep_sides(training_side, surrogate.resolutions, multiple)
    errors = []
    for side in sorted(set(sides) | {training_side}):
        pairs = validation_samples(surrogate, side, n_samples, seed)
        predictions = predict_pairs(surrogate, pairs)
        errors.append(SideError(side, relative_l2(predictions, pairs.y), n_samples))
    return ResolutionValidation(training_side, tuple(errors), MAX_FACTOR)


def _sample_fields(names: Sequence[str], stacked: np.ndarray) -> dict[str, np.ndarray]:
    return {name: stacked[c] for c, name in enumerate(names)}


def min_samples(coverage: float) -> int:
    """Fewest held-out samples that calibrate ``coverage``: ``ceil((n + 1) coverage) <= n`` (9 at 0.9)."""
    return math.ceil(coverage / (1.0 - coverage) - 1e-9)


def calibrate(surrogate: Surrogate, x: np.ndarray, y: np.ndarray, coverage: float = 0.9) -> ErrorCalibration:
    """Split-conformal calibration of the indicator: ``scale`` is the ``ceil((n + 1) coverage)``-th
    smallest of ``error / indicator`` over the ``n`` held-out samples, so that on an exchangeable new
    sample ``error <= scale * indicator`` with probability at least ``coverage``.

    Parameters
    ----------
    surrogate : Surrogate
        The model.
    x, y : ndarray, shape (sample, channel, *grid)
        Held-out inputs and their classical solutions (never used in training).
    coverage : float
        Stated coverage, in (0, 1); needs ``n >= coverage / (1 - coverage)`` samples (9 at 0.9).
    """
    n = len(x)
    refuse_uncalibratable(n, coverage, "held-out samples")
    card = surrogate.card
    predictions = predict_pairs(surrogate, OperatorPairs(x, y, card.inputs, card.outputs, card.time_map))
    errors, values = [], []
    for i in range(n):
        values.append(
            estimates.indicator(
                card,
                _sample_fields(card.input_names, x[i]),
                _sample_fields(card.output_names, predictions[i]),
            )
        )
        errors.append(relative_l2(predictions[i : i + 1], y[i : i + 1]))
    return ErrorCalibration(
        estimates.indicator_name(card), coverage, conformal_scale(errors, values, coverage), n
    )


def refuse_uncalibratable(n: int, coverage: float, what: str) -> None:
    """``ValueError`` unless ``n`` samples (``what``) can calibrate ``coverage``, in (0, 1)."""
    if not 0.0 < coverage < 1.0 or n < min_samples(coverage):
        raise ValueError(f"{n} {what} cannot calibrate a coverage of {coverage:g}")


def conformal_scale(errors: Sequence[float], indicators: Sequence[float], coverage: float) -> float:
    """The ``ceil((n + 1) coverage)``-th smallest of ``error / indicator`` over ``n`` samples (a zero
    indicator counts as 0 when its error is 0 too, else as infinity)."""
    ratios = [
        e / v if v > 0 else (0.0 if e == 0 else math.inf) for e, v in zip(errors, indicators, strict=True)
    ]
    return float(np.sort(ratios)[math.ceil((len(ratios) + 1) * coverage) - 1])


def rollout_samples(surrogate: Surrogate, n_samples: int, steps: int, seed: int) -> OperatorPairs | None:
    """Fresh trajectories at the training side for ``steps`` forward passes of a rollout: ``x`` the
    exact input window, ``y`` the exact states of every pass in order (``(sample, steps * M, *grid)``);
    None for a steady model or one whose states are not evenly spaced (it has no rollout time axis)."""
    from pdeserve.operators.family import family_of

    card = surrogate.card
    if card.time_map is None or rollout_times(card).interval is None:
        return None
    if steps < 1:
        raise ValueError(f"a rollout calibration needs a horizon of at least 1 forward pass, got {steps}")
    family = family_of(card)
    side = card.training_resolution[-1]
    interval = rollout_times(card).interval
    k, m = card.time_map.input_steps, len(card.output_names)
    # The card's trajectories extended to the horizon, recording every state a rollout predicts; the
    # time step is checked over that horizon (a step stable to the card's final time may not be).
    horizon = dataclasses.replace(
        family.parameters_from(card.pde_parameters),
        final_time=(k - 1 + steps * m) * interval,
        record_every=interval,
    )
    data = fresh_samples(family, _parameters_at(family, horizon, side, side), side, n_samples, seed)
    return operator_pairs(data, TimeMap(k, steps * m))


def calibrate_rollout(
    surrogate: Surrogate, x: np.ndarray, y: np.ndarray, coverage: float = 0.9
) -> ErrorCalibration:
    """Split-conformal calibration of the rollout estimate (``estimates.rollout_estimate``) over the
    horizon of ``y``: the model is rolled out from each exact window in ``x``, and ``scale`` is the
    largest over passes of each pass's conformal quantile of ``error / indicator`` (as :func:`calibrate`),
    so that every pass up to the horizon keeps at least ``coverage``.

    Parameters
    ----------
    surrogate : Surrogate
        A time-mapped model.
    x : ndarray, shape (sample, K, *grid)
        Exact input windows of held-out trajectories.
    y : ndarray, shape (sample, steps * M, *grid)
        Their exact states over the rollout's ``steps`` passes of ``M`` states each.
    coverage : float
        Stated coverage of each pass, in (0, 1); needs as many trajectories as :func:`calibrate` needs
        samples.
    """
    n, card = len(x), surrogate.card
    refuse_uncalibratable(n, coverage, "held-out trajectories")
    m = len(card.output_names)
    steps = y.shape[1] // m
    checks = [estimates.start_rollout(card, _sample_fields(card.input_names, x[i])) for i in range(n)]
    window, quantiles = x, []
    for p in range(steps):
        predicted = surrogate.forward(window)
        truth = y[:, p * m : (p + 1) * m]
        errors, values = [], []
        for i in range(n):
            estimate, checks[i] = estimates.rollout_estimate(
                card, checks[i], _sample_fields(card.output_names, predicted[i])
            )
            errors.append(relative_l2(predicted[i : i + 1], truth[i : i + 1]))
            values.append(estimate.indicator)
        quantiles.append(conformal_scale(errors, values, coverage))
        window = np.concatenate([window, predicted], axis=1)[:, -x.shape[1] :]
    return ErrorCalibration(estimates.indicator_name(card), coverage, max(quantiles), n, steps)


def coverage(surrogate: Surrogate, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose true relative L2 error is at most the card's estimate (its calibration)."""
    card = surrogate.card
    predictions = predict_pairs(surrogate, OperatorPairs(x, y, card.inputs, card.outputs, card.time_map))
    covered = [
        relative_l2(predictions[i : i + 1], y[i : i + 1])
        <= estimates.estimate(
            card, _sample_fields(card.input_names, x[i]), _sample_fields(card.output_names, predictions[i])
        ).relative_l2
        for i in range(len(x))
    ]
    return float(np.mean(covered))


def input_ranges(names: Sequence[str], x: np.ndarray) -> tuple[ValueRange, ...]:
    """Each input channel's range over ``x`` (``(sample, channel, *grid)``), named by ``names``."""
    return tuple(ValueRange(name, float(x[:, c].min()), float(x[:, c].max())) for c, name in enumerate(names))


def publish_validated(
    repo: str | os.PathLike,
    name: str,
    version: str | None,
    n_samples: int,
    sweep_samples: int,
    seed: int,
    coverage: float = 0.9,
    command: Sequence[str] = (),
    rollout_samples_count: int = ROLLOUT_SAMPLES,
    rollout_steps: int = ROLLOUT_STEPS,
    ledger_samples: int = 0,
) -> tuple[str, ModelCard]:
    """Validate and calibrate a published version on fresh samples and publish its weights, byte for
    byte, with the new card as the next version (lineage mode ``validate``, parent that version).

    Parameters
    ----------
    repo : path
        The model repository.
    name : str
        Model name.
    version : str or None
        The version to validate (None: the newest).
    n_samples : int
        Fresh samples at the training side that calibrate the error estimate.
    sweep_samples : int
        Fresh samples per side of the resolution sweep (seeded apart from the calibration's).
    seed : int
        Seeds the fresh samples.
    coverage : float
        Stated coverage of the estimate.
    command : sequence of str
        Command line recorded in the lineage.
    rollout_samples_count, rollout_steps : int
        For a time-mapped model with evenly spaced states: fresh trajectories, and forward passes of
        the horizon, that calibrate its rollout estimate (:func:`calibrate_rollout`).
    ledger_samples : int
        Fresh samples of the ledger (:func:`measure_ledger`; 0: none is measured).

    Returns the new version and its card.
    """
    from pdeserve.operators.repository import ModelRepository
    from pdeserve.operators.surrogate import load_surrogate

    repository = ModelRepository(repo)
    version, source = repository.resolve(name, version)
    surrogate = load_surrogate(source, name, version)
    card = surrogate.card
    lineage = _validated_lineage(card, version, command)
    if card.family is not None and not card.family.has_solver:
        calibrated = calibrate_without_solver(surrogate, repo, f"{name} v{version}", coverage)
        return _republish_with_statistics(repository, name, source, card.replace(lineage=lineage), calibrated)
    # Refused before any sampling: the checks calibrate_rollout and rollout_samples would make last.
    refuse_uncalibratable(n_samples, coverage, "samples")
    if card.time_map is not None:
        refuse_uncalibratable(rollout_samples_count, coverage, "rollout trajectories")
    if card.time_map is not None and rollout_steps < 1:
        raise ValueError(
            f"a rollout calibration needs a horizon of at least 1 forward pass, got {rollout_steps}"
        )
    calibration_pairs = validation_samples(surrogate, card.training_resolution[-1], n_samples, seed)
    trajectories = rollout_samples(surrogate, rollout_samples_count, rollout_steps, seed + 2)
    card = card.replace(
        calibration=calibrate(surrogate, calibration_pairs.x, calibration_pairs.y, coverage),
        rollout_calibration=None
        if trajectories is None
        else calibrate_rollout(surrogate, trajectories.x, trajectories.y, coverage),
        validation=validate_resolutions(surrogate, sweep_samples, seed + 1),
        input_ranges=card.input_ranges or input_ranges(card.input_names, calibration_pairs.x),
        lineage=lineage,
    )
    if ledger_samples > 0:  # measured with the new calibration: the surrogate's path includes its estimate
        surrogate.card = card
        card = card.replace(ledger=measure_ledger(surrogate, ledger_samples, seed + 3, coverage))

    return repository.republish(name, version, card), card


def _validated_lineage(card: ModelCard, version: str, command: Sequence[str]) -> Lineage:
    """The lineage of ``card``'s version validated and republished (mode ``validate``)."""
    return dataclasses.replace(
        card.lineage or Lineage(mode="validate"),
        mode="validate",
        parent=version,
        parent_weights_sha256=card.weights.sha256 if card.weights else None,
        command=tuple(command),
        gate=None,
        rollback_of=None,
        replaces=None,
        published_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def held_out_split(
    card: ModelCard, repo: str | os.PathLike, owner: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_held, y_held)``: the training inputs and the held-out (test) pairs of every dataset
    of ``card``'s lineage, read back through the recorded paths (relative to the repository ``repo``)
    and checked by fingerprint (``lineage.LineageError`` when missing or changed). ``owner`` names the
    model in messages."""
    from pdeserve.operators.lineage import LineageError, recorded_datasets, verified_dataset

    records = recorded_datasets(card)
    if records is None:
        raise LineageError(
            f"{owner} records no training data in its lineage: its solver-free estimate is calibrated "
            "on the held-out split of that data"
        )
    x_train, x_held, y_held = [], [], []
    for record in records:
        data = verified_dataset(record, repo, owner)
        if card.time_map is None:
            x, y = stack_fields(data.inputs, card.input_names), stack_fields(data.outputs, card.output_names)
        else:
            pairs = operator_pairs(data, card.time_map)
            x, y = pairs.x, pairs.y
        train, _, test = record.parts()
        x_train.append(x[train])
        x_held.append(x[test])
        y_held.append(y[test])
    return np.concatenate(x_train), np.concatenate(x_held), np.concatenate(y_held)


def calibrate_without_solver(
    surrogate: Surrogate, repo: str | os.PathLike, owner: str, coverage: float = 0.9
) -> solver_free_estimate.Calibrated:
    """The solver-free estimate of ``surrogate`` calibrated on the first half of its lineage's held-out
    pairs (:func:`held_out_split`) and its coverage measured on the second half."""
    card = surrogate.card
    x_train, x_held, y_held = held_out_split(card, repo, owner)
    predictions = predict_pairs(
        surrogate, OperatorPairs(x_held, y_held, card.inputs, card.outputs, card.time_map)
    )
    errors = solver_free_estimate.sample_errors(predictions, y_held)
    return solver_free_estimate.calibrate(card, x_train, x_held, errors, coverage)


def _republish_with_statistics(
    repository, name: str, source: Path, card: ModelCard, calibrated: solver_free_estimate.Calibrated
) -> tuple[str, ModelCard]:
    """Publish ``source``'s files again (weights byte for byte) with the solver-free statistics and
    ``card`` holding their calibration, as the next version; the version and its card."""
    from pdeserve.operators.repository import write_card

    written: list[ModelCard] = []

    def write(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        record = calibrated.statistics.save(folder)
        written.append(
            card.replace(solver_free=dataclasses.replace(calibrated.calibration, statistics=record))
        )
        write_card(folder, written[0])

    return repository.publish(name, write), written[0]


# ----------------------------------------------------------------------------------------------------
# The ledger: error and cost of every way of answering (serving/router.py reads it)


def ladder_of(card: ModelCard, side: int, finest: int | None = None) -> tuple[Any, Any, list[Rung]]:
    """``(family, parameters, rungs)``: the rungs of ``card``'s family's ladder that answer at ``side``
    on a solve grid no finer than ``finest`` (default ``side``: cheaper than the reference), with the
    parameters they take: for a time-mapped model, those of the interval from its last input state to
    its outputs (at the training side's times)."""
    from pdeserve.operators.family import family_of

    family = family_of(card)
    params = family.parameters_from(card.pde_parameters)
    if family.ladder is None:
        return family, params, []
    if card.time_map is not None:
        states = family.state_times(params, card.training_resolution[-1])
        k, m = card.time_map.input_steps, len(card.output_names)
        params = ladder_parameters(params, states[k : k + m] - states[k - 1])
    finest = side if finest is None else finest
    rungs = [r for r in family.ladder(params, side) if int(r.settings.get("grid", side)) <= finest]
    return family, params, rungs


def rung_answers(card: ModelCard, family: Any, params: Any, rung: Rung, x: np.ndarray) -> np.ndarray:
    """``rung``'s answers ``(sample, output, *grid)`` to a model's inputs ``x`` (``(sample, input,
    *grid)``, on any grid): a steady model's inputs by name, a time-mapped model's last input state."""
    if card.time_map is None:
        solved = rung.solve(params, {name: x[:, c] for c, name in enumerate(card.input_names)})
        return np.stack([np.asarray(solved[name]) for name in card.output_names], axis=1)
    solved = rung.solve(params, {family.inputs[0].name: np.asarray(x[:, -1], dtype=np.float64)})
    return np.asarray(solved[family.outputs[0].name])


def _quantile(errors: Sequence[float], coverage: float) -> float:
    """The conformal ``coverage`` quantile: the ``ceil((n + 1) coverage)``-th smallest (the largest for
    fewer samples)."""
    ordered = np.sort(errors)
    return float(ordered[min(len(ordered), math.ceil((len(ordered) + 1) * coverage)) - 1])


def _reference_samples(answer, x: np.ndarray, fewest: int) -> int:
    """How many of ``x`` the reference answers in a ledger: at least ``fewest``, and all that fit in
    ``LEDGER_REFERENCE_BUDGET_S`` at the cost of one timed solve."""
    fewest = max(1, min(len(x), fewest))
    started = time.perf_counter()
    try:
        answer(x[:1])
    except ValueError:  # a refusal: the ledger's entry says so
        return fewest
    seconds = max(time.perf_counter() - started, 1e-6)
    return max(fewest, min(len(x), int(LEDGER_REFERENCE_BUDGET_S / seconds)))


def _entry(path: str, rung: str, settings, answer, x: np.ndarray, y: np.ndarray, coverage: float):
    """The ``LedgerEntry`` of ``answer`` (``x -> y``'s answers, one sample per call, as a request of one
    sample is answered: the median call is its cost) after one untimed warm-up call; None when it refuses
    the samples or answers something not finite (it cannot answer them)."""
    try:
        answer(x[:1])
        answers, seconds = [], []
        for i in range(len(x)):
            started = time.perf_counter()
            answers.append(answer(x[i : i + 1]))
            seconds.append(time.perf_counter() - started)
        predicted = np.concatenate(answers)
    except ValueError:  # a refusal: this path cannot take these samples
        return None
    if not np.all(np.isfinite(predicted)):
        return None
    errors = [relative_l2(predicted[i : i + 1], y[i : i + 1]) for i in range(len(y))]
    return LedgerEntry(
        path,
        rung,
        dict(settings),
        _quantile(errors, coverage),
        float(np.mean(errors)),
        float(np.median(seconds)),
    )


def measure_ledger(
    surrogate: Surrogate,
    n_samples: int = LEDGER_SAMPLES,
    seed: int = 0,
    coverage: float = 0.9,
    finest: int | None = None,
    reference_samples: int = LEDGER_REFERENCE_SAMPLES,
) -> Ledger:
    """Error (the ``coverage`` quantile and the mean) and seconds per one-sample call of the surrogate
    with its estimate, of every rung of :func:`ladder_of` and of the family's reference solve, on
    ``n_samples`` fresh samples at the training side (the reference itself on the first
    ``reference_samples``, and on more, up to all, where they fit in ``LEDGER_REFERENCE_BUDGET_S``),
    against the family's reference solved ``reference_refinement`` times as finely
    (:func:`finer_reference`; the inputs drawn on that grid, as the finer solve needs them, and given to
    every path at the training side): so the reference path's own error is measured too, and no path
    promises an error below what the PDE's solution allows. ``finest``: the finest solve grid of a rung
    measured (default: the training side)."""
    from pdeserve.operators.pairs import reference_outputs

    card = surrogate.card
    side = card.training_resolution[-1]
    pairs = validation_samples(surrogate, side, n_samples, seed, finer=True)
    x, y = pairs.x, pairs.y

    def surrogate_answers(x: np.ndarray) -> np.ndarray:
        predicted = surrogate.forward(x)
        if card.calibration is not None:
            for i in range(len(x)):
                estimates.estimate(
                    card,
                    _sample_fields(card.input_names, x[i]),
                    _sample_fields(card.output_names, predicted[i]),
                )
        return predicted

    def reference_answers(x: np.ndarray) -> np.ndarray:
        solved = [reference_outputs(card, _sample_fields(card.input_names, sample)) for sample in x]
        return np.stack([[s[name] for name in card.output_names] for s in solved])

    family, params, rungs = ladder_of(card, side, finest)
    entries = [_entry(SURROGATE_PATH, "", {}, surrogate_answers, x, y, coverage)]
    for rung in rungs:
        answer = lambda x, rung=rung: rung_answers(card, family, params, rung, x)  # noqa: E731
        entries.append(_entry(RUNG_PATH, rung.label, rung.settings, answer, x, y, coverage))
    n = _reference_samples(reference_answers, x, reference_samples)
    entries.append(_entry(REFERENCE_PATH, "", {}, reference_answers, x[:n], y[:n], coverage))
    return Ledger(side, coverage, n_samples, tuple(e for e in entries if e is not None))
