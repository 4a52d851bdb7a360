"""What a served model can do without its PDE family: a model whose family's distribution is not
installed here, or that was trained on imported data (no classical solver at all), still answers with
its surrogate. What needs the family's solver (a reference, a tolerance, a rollout held to an estimated
error, the family's own estimate) is refused with ``FamilyUnavailableError`` (FAILED_PRECONDITION,
serving/errors.py) saying what is missing; this module answers the rest from the model card alone."""

from __future__ import annotations

import numpy as np

from pdeserve.operators.card import ModelCard
from pdeserve.operators.errors import FamilyUnavailableError
from pdeserve.operators.family import family_of
from pdeserve.operators.pairs import RolloutTimes, rollout_times

TIME_MARK = "@t="


def solver_unavailable_reason(card: ModelCard) -> str:
    """Why ``card``'s model has no classical solver on this server ("" when it has one)."""
    try:
        family = family_of(card)
    except FamilyUnavailableError as exc:
        return str(exc)
    return "" if family.reference is not None else f"the PDE family {card.pde!r} has no classical solver"


def rollout_axis(card: ModelCard) -> RolloutTimes:
    """The rollout time axis of a time-mapped model: its family's, or without the family, what its
    channel names (``w@t=0``, ..., ``w@t=10``) say; no interval when they do not say it."""
    try:
        return rollout_times(card)
    except FamilyUnavailableError:
        pass
    names = [*card.input_names, *card.output_names]
    field = card.output_names[0].split(TIME_MARK)[0]
    # A model reading one state reads the one at t = 0 (its channel is named by the initial state).
    times = [0.0 if i == 0 and TIME_MARK not in n else _time(n) for i, n in enumerate(names)]
    k = len(card.input_names)
    if any(t is None for t in times) or len(times) < 2:
        return RolloutTimes(field, 0.0, None)
    steps = np.diff(times)
    interval = float(steps[0]) if steps[0] > 0 and np.allclose(steps, steps[0]) else None
    return RolloutTimes(field, times[k] - times[0], interval)


def _time(name: str) -> float | None:
    """The time a channel name carries (``w@t=0.5``: 0.5), None when it carries none."""
    _, mark, value = name.partition(TIME_MARK)
    try:
        return float(value) if mark else None
    except ValueError:
        return None
