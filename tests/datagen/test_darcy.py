import numpy as np
import pytest

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample, solve_darcy
from pdeserve.datagen.grids import UnitSquareGrid


def manufactured(grid: UnitSquareGrid):
    """u = sin(pi x) sin(pi y) e^x with a smooth variable coefficient, and the matching forcing."""
    x, y = grid.mesh()
    pi = np.pi
    u = np.sin(pi * x) * np.sin(pi * y) * np.exp(x)
    a = 1 + 0.5 * np.sin(2 * pi * x) * np.cos(3 * pi * y)
    ax, ay = pi * np.cos(2 * pi * x) * np.cos(3 * pi * y), -1.5 * pi * np.sin(2 * pi * x) * np.sin(3 * pi * y)
    ux = (pi * np.cos(pi * x) + np.sin(pi * x)) * np.exp(x) * np.sin(pi * y)
    uy = pi * np.sin(pi * x) * np.exp(x) * np.cos(pi * y)
    uxx = (-(pi**2) * np.sin(pi * x) + 2 * pi * np.cos(pi * x) + np.sin(pi * x)) * np.exp(x) * np.sin(pi * y)
    uyy = -(pi**2) * u
    f = -(ax * ux + ay * uy + a * (uxx + uyy))
    return a, f, u


def test_second_order_convergence_on_manufactured_solution():
    errors = []
    sizes = (17, 33, 65, 129)
    for n in sizes:
        grid = UnitSquareGrid(n)
        a, f, u = manufactured(grid)
        errors.append(np.abs(solve_darcy(a, f, grid) - u).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 2e-4
    assert np.all((orders > 1.9) & (orders < 2.1)), orders


def test_solver_rejects_non_positive_coefficient():
    grid = UnitSquareGrid(9)
    with pytest.raises(ValueError, match="strictly positive"):
        solve_darcy(np.zeros((9, 9)), 1.0, grid)


def test_benchmark_sample_is_two_valued_positive_and_zero_on_boundary():
    sample = darcy_sample(DarcyParameters(), 33, np.random.default_rng(0))
    a, u = sample["a"], sample["u"]
    assert a.shape == u.shape == (33, 33)
    assert set(np.unique(a)) == {3.0, 12.0}
    assert np.all(u[0] == 0) and np.all(u[-1] == 0) and np.all(u[:, 0] == 0) and np.all(u[:, -1] == 0)
    # f = 1 > 0: the maximum principle makes u positive inside; benchmark solutions peak near 1e-2.
    assert u[1:-1, 1:-1].min() > 0
    assert 2e-3 < u.max() < 5e-2


def test_fine_solve_subsamples_onto_coarse_nodes():
    params = DarcyParameters(solve_resolution=65)
    coarse = darcy_sample(params, 17, np.random.default_rng(3))
    fine = darcy_sample(DarcyParameters(), 65, np.random.default_rng(3))
    np.testing.assert_array_equal(coarse["a"], fine["a"][::4, ::4])
    np.testing.assert_allclose(coarse["u"], fine["u"][::4, ::4])


def test_resolution_that_does_not_nest_is_refused():
    with pytest.raises(ValueError, match="does not nest"):
        darcy_sample(DarcyParameters(solve_resolution=100), 33, np.random.default_rng(0))


def test_lognormal_coefficient_spans_the_contrast_within_two_standard_deviations():
    params = DarcyParameters(coefficient="lognormal", contrast="20/5")
    rng = np.random.default_rng(2)
    a = np.stack([darcy_sample(params, 33, rng)["a"] for _ in range(60)])
    log_a = np.log(a)
    # log a = log 10 + log(4)/(4 sigma) g: mean log(10), standard deviation log(4)/4 on average.
    assert log_a.mean() == pytest.approx(np.log(10.0), abs=0.05)
    assert log_a.std() == pytest.approx(np.log(4.0) / 4.0, rel=0.15)
    inside = np.mean((a >= 5.0) & (a <= 20.0))
    assert 0.9 < inside < 0.99


def test_piecewise_contrast_sets_the_two_levels():
    a = darcy_sample(DarcyParameters(contrast="12/4"), 17, np.random.default_rng(0))["a"]
    assert set(np.unique(a)) == {4.0, 12.0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"contrast": "12"}, "HIGH/LOW"),
        ({"contrast": "12/-3"}, "HIGH/LOW"),
        ({"contrast": "a/b"}, "HIGH/LOW"),
        ({"coefficient": "binary"}, "piecewise, lognormal"),
    ],
)
def test_bad_coefficient_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DarcyParameters(**kwargs)
