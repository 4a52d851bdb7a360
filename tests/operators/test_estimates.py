"""Error indicators and refinement for every PDE family, against the classical solvers."""

import numpy as np
import pytest

from pdeserve.datagen.burgers import BurgersParameters
from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.families import get_family
from pdeserve.datagen.helmholtz import HelmholtzParameters, helmholtz_reference
from pdeserve.datagen.navier_stokes import NavierStokesParameters
from pdeserve.operators import estimates
from pdeserve.operators.card import TimeMap
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.training import prepare
from pdeserve.operators.validation import fresh_samples

TINY = {"n_modes": [4, 4], "hidden_channels": 4, "n_layers": 1}


def _card_and_data(pde, params, side, n=4, time_map=None, arguments=TINY):
    """An (untrained) model's card for ``pde`` and a few fresh samples at ``side``."""
    data = fresh_samples(get_family(pde), params.for_resolution(side), side, n, seed=3)
    return prepare(data, "fno", arguments, TrainingSettings(test_fraction=0.5), time_map).card, data


def _noisy(u, level, seed=0):
    return u + level * np.std(u) * np.random.default_rng(seed).standard_normal(u.shape)


def test_helmholtz_refinement_meets_the_tolerance_against_the_direct_solve():
    params = HelmholtzParameters(omega=300.0)
    card, data = _card_and_data("helmholtz", params, 33)
    c, u = data.inputs["c"][0], data.outputs["u"][0]
    guess = _noisy(u, 0.05)
    assert estimates.indicator(card, {"c": c}, {"u": u}) < 1e-10
    assert estimates.indicator(card, {"c": c}, {"u": guess}) > 0.5
    direct = helmholtz_reference(params.for_resolution(33), c)
    refined = estimates.refine(card, {"c": c}, {"u": guess}, 1e-8)
    assert refined.path == estimates.REFINED and 1 <= refined.iterations <= 10
    assert refined.residual <= 1e-8
    assert np.linalg.norm(refined.outputs["u"] - direct) / np.linalg.norm(direct) < 1e-7


def test_helmholtz_refinement_falls_back_to_the_direct_solve_within_its_bound():
    params = HelmholtzParameters(omega=300.0)
    card, data = _card_and_data("helmholtz", params, 33)
    c, u = data.inputs["c"][0], data.outputs["u"][0]
    refined = estimates.refine(card, {"c": c}, {"u": np.zeros_like(u)}, 1e-12, max_iterations=1)
    assert refined.path == estimates.CLASSICAL and refined.residual < 1e-12
    np.testing.assert_allclose(refined.outputs["u"], u, rtol=0, atol=1e-9 * np.abs(u).max())


def test_darcy_refinement_meets_the_tolerance_against_the_direct_solve():
    card, data = _card_and_data("darcy", DarcyParameters(), 33)
    a, u = data.inputs["a"][0], data.outputs["u"][0]
    guess = _noisy(u, 0.05)
    refined = estimates.refine(card, {"a": a}, {"u": guess}, 1e-9)
    assert refined.path == estimates.REFINED and refined.residual <= 1e-9
    assert np.linalg.norm(refined.outputs["u"] - u) / np.linalg.norm(u) < 1e-7
    # The indicator tracks the error within the coefficient's contrast.
    error = np.linalg.norm(guess[1:-1, 1:-1] - u[1:-1, 1:-1]) / np.linalg.norm(u[1:-1, 1:-1])
    assert 0.25 < error / estimates.indicator(card, {"a": a}, {"u": guess}) < 4.0


def test_two_solution_indicator_tracks_the_error_of_a_navier_stokes_trajectory():
    params = NavierStokesParameters(final_time=2.0, record_every=1.0, time_step=5e-3)
    card, data = _card_and_data("navier-stokes", params, 32, n=2, time_map=TimeMap(2, 1))
    states = np.concatenate([data.inputs["w0"][:1], data.outputs["w"][0]])
    inputs = dict(zip(card.input_names, states[:2], strict=True))
    exact = dict(zip(card.output_names, states[2:], strict=True))
    noisy = {name: _noisy(w, 0.05, i) for i, (name, w) in enumerate(exact.items())}
    # The coarse solve (16 x 16) is within 1% of the exact states, well below a surrogate's error.
    assert estimates.indicator(card, inputs, exact) < 0.01
    assert estimates.indicator(card, inputs, noisy) == pytest.approx(0.05, rel=0.2)
    refined = estimates.refine(card, inputs, noisy, 1e-3)
    assert refined.path == estimates.CLASSICAL
    for name, w in exact.items():
        assert np.linalg.norm(refined.outputs[name] - w) / np.linalg.norm(w) < 1e-6


def test_two_solution_indicator_tracks_the_error_of_a_burgers_state():
    params = BurgersParameters(solve_resolution=64)
    card, data = _card_and_data("burgers", params, 64, arguments={"n_modes": [8], "hidden_channels": 4})
    u0, u = data.inputs["u0"][0], data.outputs["u"][0, -1]
    assert estimates.indicator(card, {"u0": u0}, {"u": u}) < 1e-4
    assert estimates.indicator(card, {"u0": u0}, {"u": _noisy(u, 0.03)}) == pytest.approx(0.03, rel=0.2)
    refined = estimates.refine(card, {"u0": u0}, {"u": _noisy(u, 0.03)}, 1e-3)
    assert refined.path == estimates.CLASSICAL
    assert np.linalg.norm(refined.outputs["u"] - u) / np.linalg.norm(u) < 1e-10


def test_estimate_scales_the_indicator_by_the_calibration():
    from pdeserve.operators.card import ErrorCalibration

    card, data = _card_and_data("darcy", DarcyParameters(), 17)
    inputs, outputs = {"a": data.inputs["a"][0]}, {"u": 1.1 * data.outputs["u"][0]}
    plain = estimates.estimate(card, inputs, outputs)
    assert plain.relative_l2 is None and plain.indicator > 0
    calibrated = card.replace(calibration=ErrorCalibration("preconditioned-residual", 0.9, 2.0, 50))
    checked = estimates.estimate(calibrated, inputs, outputs)
    assert checked.relative_l2 == pytest.approx(2.0 * plain.indicator) and checked.coverage == 0.9
