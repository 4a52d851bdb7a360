"""Operator learning pairs ``(x, y)`` from a dataset: which fields (and time steps) map to which.

A steady family (Darcy, Helmholtz) maps its input fields to its output fields. A time-dependent family
(Burgers, Navier-Stokes) stores an initial state ``s_0`` and a trajectory ``s(t_1..t_N)``; the operator
maps the first ``input_steps`` states of the sequence ``s_0, s(t_1), ..., s(t_N)`` to the next
``output_steps`` (as channels): ``1 -> all`` is the initial state to the whole trajectory (Burgers'
``u0 -> u(1)``), ``10 -> 1`` a next-step map as in the FNO paper's recurrent Navier-Stokes model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pdeserve.datagen.dataset import LoadedDataset
from pdeserve.operators.card import FieldSpec, ModelCard, TimeMap
from pdeserve.operators.errors import FamilyUnavailableError


@dataclass(frozen=True)
class OperatorPairs:
    """Stacked operator inputs and outputs of a dataset.

    Parameters
    ----------
    x, y : ndarray
        ``(sample, channel, *grid)`` float32 inputs and targets.
    inputs, outputs : tuple of FieldSpec
        Each channel, as a model's card records it.
    time_map : TimeMap or None
        The time map used (with its output steps resolved) for a trajectory dataset, None for a
        steady one.
    """

    x: np.ndarray
    y: np.ndarray
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    time_map: TimeMap | None


def stack_fields(fields: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    """``(sample, channel, *grid)`` float32 from per-field ``(sample, *grid)`` arrays."""
    return np.stack([fields[n] for n in names], axis=1).astype(np.float32, copy=False)


def check_finite(data: LoadedDataset) -> None:
    """``ValueError`` naming the first field of ``data`` that holds NaN or Inf: one such value turns
    every loss and error computed on it into NaN."""
    for name, values in {**data.inputs, **data.outputs}.items():
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            raise ValueError(
                f"the dataset's field {name!r} holds NaN or Inf values in {int(bad.sum())} of "
                f"{len(values)} samples (first: sample {int(np.argmax(bad))}); models are trained and "
                "evaluated on finite data only"
            )


def operator_pairs(data: LoadedDataset, time_map: TimeMap | None = None) -> OperatorPairs:
    """The ``(x, y)`` pairs of ``data`` (``ValueError`` if a field holds NaN or Inf); ``time_map``
    applies to trajectory datasets only."""
    check_finite(data)
    family = data.family
    trajectories = [f for f in family.outputs if f.dims[:1] == ("t",)]
    if not trajectories:
        if time_map is not None and time_map != TimeMap(1, None):
            raise ValueError(f"{family.name} has no time axis; input/output steps do not apply")
        names_in, names_out = data.attrs["input_fields"], data.attrs["output_fields"]
        return OperatorPairs(
            stack_fields(data.inputs, names_in),
            stack_fields(data.outputs, names_out),
            tuple(FieldSpec(f.name, f.description) for f in family.inputs),
            tuple(FieldSpec(f.name, f.description) for f in family.outputs),
            None,
        )
    if len(family.inputs) != 1 or len(family.outputs) != 1:
        raise ValueError(f"{family.name}: time maps need one initial state and one trajectory field")
    time_map = time_map or TimeMap()
    start, trajectory = family.inputs[0], family.outputs[0]
    states = np.concatenate([data.inputs[start.name][:, None], data.outputs[trajectory.name]], axis=1)
    times = family.state_times(data.parameters, states.shape[-1]).tolist()
    k = time_map.input_steps
    m = time_map.output_steps if time_map.output_steps is not None else len(times) - k
    if m < 1 or k + m > len(times):
        raise ValueError(
            f"{k} input and {m} output steps do not fit the {len(times)} stored states (t = 0 and "
            f"{len(times) - 1} recorded times)"
        )

    def channel(step: int) -> FieldSpec:
        if step == 0 and k == 1:
            return FieldSpec(start.name, start.description)
        if step == len(times) - 1 and m == 1 and k == len(times) - 1 == 1:
            return FieldSpec(trajectory.name, f"{trajectory.name} at t = {times[step]:g}")
        return FieldSpec(f"{trajectory.name}@t={times[step]:g}", f"state at t = {times[step]:g}")

    return OperatorPairs(
        np.ascontiguousarray(states[:, :k], dtype=np.float32),
        np.ascontiguousarray(states[:, k : k + m], dtype=np.float32),
        tuple(channel(i) for i in range(k)),
        tuple(channel(i) for i in range(k, k + m)),
        TimeMap(k, m),
    )


@dataclass(frozen=True)
class RolloutTimes:
    """The time axis of a time-mapped model's rollout.

    Parameters
    ----------
    field : str
        The state field it steps (e.g. ``w``).
    first : float
        Time of the first predicted state, counting the first input state as t = 0.
    interval : float or None
        Time between predicted states (None when the recorded times are not evenly spaced).
    """

    field: str
    first: float
    interval: float | None


def rollout_times(card: ModelCard) -> RolloutTimes:
    """The rollout time axis of a time-mapped model (``ValueError`` for a steady one)."""
    from pdeserve.operators.family import family_of

    if card.time_map is None:
        raise ValueError("a steady model has no time axis")
    family = family_of(card)
    times = family.state_times(family.parameters_from(card.pde_parameters), card.training_resolution[-1])
    steps = np.diff(times)
    interval = float(steps[0]) if np.allclose(steps, steps[0]) else None
    return RolloutTimes(family.outputs[0].name, float(times[card.time_map.input_steps]), interval)


def reference_outputs(card: ModelCard, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The classical solver's answer for one sample of a model's inputs, keyed by its output names.

    Parameters
    ----------
    card : ModelCard
        The model's card (PDE, parameters, fields, time map).
    inputs : mapping of str to ndarray
        One sample of each input field, without a batch axis. A time-mapped model is solved from its
        first input, the state at t = 0, and the states at its output times are returned.
    """
    from pdeserve.operators.family import family_and_parameters

    family, params = family_and_parameters(card)
    if family.reference is None:
        raise FamilyUnavailableError(f"the PDE family {card.pde!r} has no classical solver")
    if card.time_map is None:
        solved = family.reference(params, inputs)
        return {name: solved[name] for name in card.output_names}
    start, trajectory = family.inputs[0].name, family.outputs[0].name
    initial = np.asarray(inputs[card.input_names[0]])
    states = np.concatenate([initial[None], family.reference(params, {start: initial})[trajectory]])
    k = card.time_map.input_steps
    return {name: states[k + j] for j, name in enumerate(card.output_names)}
