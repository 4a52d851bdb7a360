"""A resolution sweep solves its references with a time step the family's solver accepts at each side."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from pdeserve.datagen.burgers import BurgersParameters
from pdeserve.datagen.families import get_family
from pdeserve.datagen.navier_stokes import NavierStokesParameters
from pdeserve.operators import validation
from pdeserve.operators.card import TimeMap
from pdeserve.operators.resolution import ResolutionRule

# A Navier-Stokes card trained at 64 x 64 with the largest step stable there (0.0033).
NS_CARD = NavierStokesParameters(
    viscosity=1e-3, time_step=0.0033, final_time=10.0, record_every=1.0, solve_resolution=64, sigma=18.52
)


def test_navier_stokes_sweep_caps_the_card_step_where_it_is_unstable():
    family = get_family("navier-stokes")
    sides = validation.sweep_sides(64, ResolutionRule(2, 1024), validation.MAX_MULTIPLE_TIME_DEPENDENT)
    steps = {}
    for side in sides:
        params = validation._parameters_at(family, NS_CARD, 64, side)
        assert params.solve_resolution == side
        assert params.stability_factor(side) <= 1.0
        steps[side] = params.time_step
    assert all(steps[side] == 0.0033 for side in (32, 33, 48, 63, 64))  # stable: the card's own step
    assert (steps[65], steps[96], steps[127], steps[128]) == (0.0032, 0.0024, 0.0019, 0.0019)
    assert NS_CARD.stability_factor(65) > 1.0  # the card's step is refused there


def test_burgers_sweep_caps_an_explicit_step_unstable_on_the_finer_solve_grid():
    family = get_family("burgers")
    card = BurgersParameters(viscosity=1e-3, solve_resolution=256).for_resolution(64)
    assert card.time_step == 5e-4
    fine = validation._parameters_at(family, card, 64, 256)
    assert fine.solve_resolution == 1024 and fine.time_step == 1.25e-4
    assert fine.stability_factor(fine.time_step) <= 1.0
    assert validation._parameters_at(family, card, 64, 128).time_step == 5e-4  # still stable: kept


@pytest.mark.parametrize("side", [17, 32])
def test_navier_stokes_references_are_solved_on_sides_finer_than_the_training_side(side):
    # Trained at 16 with the largest step stable there; 17 and 32 refuse that step.
    card_params = NavierStokesParameters(final_time=2.0, record_every=1.0, time_step=0.015)
    assert card_params.stability_factor(16) <= 1.0 < card_params.stability_factor(side)
    card = SimpleNamespace(
        pde="navier-stokes",
        pde_parameters=dataclasses.asdict(card_params),
        training_resolution=(16, 16),
        time_map=TimeMap(1, 2),
        family=None,
    )
    pairs = validation.validation_samples(SimpleNamespace(card=card), side, n_samples=2, seed=0)
    assert pairs.x.shape == (2, 1, side, side) and pairs.y.shape == (2, 2, side, side)
    assert np.all(np.isfinite(pairs.y)) and 0.0 < np.abs(pairs.y).max() < 10.0
    family = get_family("navier-stokes")
    assert validation._parameters_at(family, card_params, 16, side).time_step < 0.015
