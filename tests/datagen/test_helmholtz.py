import math

import numpy as np
import pytest
import xarray as xr

from pdeserve.cli import datagen_main
from pdeserve.datagen.dataset import load_dataset
from pdeserve.datagen.families import get_family
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.helmholtz import (
    HelmholtzParameters,
    HelmholtzSolver,
    benchmark_load,
    helmholtz_batch,
    helmholtz_reference,
    helmholtz_sample,
    neumann_load,
    segment_load,
    solve_helmholtz,
)
from pdeserve.datagen.random_fields import NeumannGaussianField, kl_mode_order


def manufactured(grid: UnitSquareGrid, omega: float):
    """A smooth u with nonzero normal derivative on every side, a variable c, and the matching data."""
    x, y = grid.mesh()
    trig = np.cos(2.0 * x + 0.3) * np.sin(1.5 * y + 0.4)
    u = trig + 0.5 * np.exp(x * y)
    c = 2.0 + 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y) + 0.3 * x * y
    laplacian = -6.25 * trig + 0.5 * np.exp(x * y) * (x**2 + y**2)
    ux = -2.0 * np.sin(2.0 * x + 0.3) * np.sin(1.5 * y + 0.4) + 0.5 * y * np.exp(x * y)
    uy = 1.5 * np.cos(2.0 * x + 0.3) * np.cos(1.5 * y + 0.4) + 0.5 * x * np.exp(x * y)
    f = -laplacian - (omega / c) ** 2 * u
    # Outward normal derivatives: bottom -u_y, right u_x, top u_y, left -u_x.
    flux = {"bottom": -uy[:, 0], "right": ux[-1, :], "top": uy[:, -1], "left": -ux[0, :]}
    return c, u, f, flux


def test_second_order_convergence_on_manufactured_solution_with_neumann_data_on_every_side():
    # omega / c is about 7.5, so the (omega / c)^2 u term dominates the Laplacian of u (and is away from
    # a resonance, which would amplify every error).
    omega, errors, sizes = 15.0, [], (17, 33, 65, 129)
    for n in sizes:
        grid = UnitSquareGrid(n)
        c, u, f, flux = manufactured(grid, omega)
        uh = HelmholtzSolver(grid, omega).solve(c, neumann_load(grid, source=f, **flux))
        errors.append(np.abs(uh - u).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 1e-3
    assert np.all((orders > 1.8) & (orders < 2.4)), orders
    assert abs(orders[-1] - 2.0) < 0.05, orders


def test_full_edge_source_matches_the_exact_one_dimensional_solution():
    # Constant c and du/dn = 1 on the whole top edge: u = -cos(k y) / (k sin k), k = omega / c.
    params = HelmholtzParameters(omega=200.0, speed_amplitude=0.0, source_width=1.0)
    k = params.omega / params.speed_mean
    errors = []
    for n in (65, 129):
        grid = UnitSquareGrid(n)
        u = solve_helmholtz(np.full((n, n), params.speed_mean), params, grid)
        exact = -np.cos(k * grid.coordinates) / (k * np.sin(k))
        errors.append(np.abs(u - exact[None, :]).max() / np.abs(exact).max())
    assert errors[-1] < 6e-3
    assert math.log2(errors[0] / errors[1]) > 1.9


def test_segment_load_integrates_the_indicator_exactly():
    grid = UnitSquareGrid(11)  # nodes at multiples of 0.1
    load = segment_load(grid, 0.25, 0.42)
    assert np.count_nonzero(load[:, :-1]) == 0
    assert load.sum() == pytest.approx(0.17, rel=1e-12)
    # Node 0.3's hat (support [0.2, 0.4]) is covered from 0.25, where it is 1/2: 0.05 * 3/4 + 0.05.
    assert load[3, -1] == pytest.approx(0.05 * 0.75 + 0.05, rel=1e-12)
    # Node 0.4's hat is covered up to 0.42, where it is 4/5: 0.05 + 0.02 * (1 + 0.8) / 2.
    assert load[4, -1] == pytest.approx(0.05 + 0.018, rel=1e-12)
    assert load[1, -1] == 0 and load[6, -1] == 0  # hats [0, 0.2] and [0.5, 0.7] miss the segment
    whole = segment_load(grid, 0.0, 1.0)
    np.testing.assert_allclose(whole, neumann_load(grid, top=np.ones(11)), rtol=1e-12, atol=1e-15)


def test_discrete_benchmark_solution_solves_its_system_and_balances_the_boundary_flux():
    params = HelmholtzParameters().for_resolution(101)
    assert params.solve_resolution == 101  # the benchmark grid itself
    grid = UnitSquareGrid(101)
    c = params.sample_speed(grid, np.random.default_rng(1))
    load = benchmark_load(params, grid)
    u = solve_helmholtz(c, params, grid)
    matrix = HelmholtzSolver(grid, params.omega).matrix(c)
    assert abs(matrix - matrix.T).max() == 0.0
    assert np.linalg.norm(matrix @ u.ravel() - load.ravel()) < 1e-9 * np.linalg.norm(load)
    # Integrating the PDE: int (omega / c)^2 u = -int_boundary du/dn = -source_width (trapezoid rule).
    weights = np.full(101, grid.h)
    weights[[0, -1]] /= 2
    integral = weights @ ((params.omega / c) ** 2 * u) @ weights
    assert integral == pytest.approx(-params.source_width, rel=1e-3)


def test_solution_satisfies_the_pde_and_the_neumann_data_pointwise():
    # A lower frequency, so 129 nodes resolve the waves well enough for finite-difference checks.
    params = HelmholtzParameters(omega=200.0)
    grid = UnitSquareGrid(129)
    h, x = grid.h, grid.coordinates
    c = params.sample_speed(grid, np.random.default_rng(4))
    u = solve_helmholtz(c, params, grid)
    q = (params.omega / c) ** 2
    laplacian = (u[2:, 1:-1] + u[:-2, 1:-1] + u[1:-1, 2:] + u[1:-1, :-2] - 4 * u[1:-1, 1:-1]) / h**2
    residual = np.abs(-laplacian - q[1:-1, 1:-1] * u[1:-1, 1:-1])
    # du/dn jumps at the segment's ends, where u is not smooth: check elsewhere.
    X, Y = (a[1:-1, 1:-1] for a in grid.mesh())
    far = np.minimum(np.hypot(X - 0.35, Y - 1), np.hypot(X - 0.65, Y - 1)) > 0.1
    assert residual[far].max() < 3e-3 * np.abs(q * u).max()

    def outward(edge: np.ndarray, inner: np.ndarray, next_inner: np.ndarray) -> np.ndarray:
        return (3 * edge - 4 * inner + next_inner) / (2 * h)  # second-order one-sided difference

    top = outward(u[:, -1], u[:, -2], u[:, -3])
    others = [outward(u[:, 0], u[:, 1], u[:, 2]), outward(u[0], u[1], u[2]), outward(u[-1], u[-2], u[-3])]
    away = np.abs(np.abs(x - 0.5) - 0.15) > 4 * h
    np.testing.assert_allclose(top[away], (np.abs(x - 0.5) <= 0.15)[away], atol=5e-3)
    assert max(np.abs(g).max() for g in others) < 1e-3


def test_wave_speed_statistics():
    params = HelmholtzParameters()
    grid = UnitSquareGrid(33)
    rng = np.random.default_rng(11)
    c = np.stack([params.sample_speed(grid, rng) for _ in range(300)])
    assert c.min() > 19.0 and c.max() < 21.0
    assert c.mean() == pytest.approx(20.0, abs=0.01)
    # xi = artanh(c - 20) has domain-averaged variance sum_k lambda_k over the 100 modes.
    xi = np.arctanh(c - 20.0)
    modes = kl_mode_order(100)
    expected = np.sum((np.pi**2 * (modes**2).sum(axis=1) + 9.0) ** -2.0)
    assert xi.var(axis=0).mean() == pytest.approx(expected, rel=0.1)
    # kl_modes = 0 keeps every grid mode: the Darcy field without its tau^(alpha - 1) = 3 prefactor.
    full = HelmholtzParameters(kl_modes=0)
    xi_full = np.stack([full.sample_log_field(grid, rng) for _ in range(300)])
    assert xi_full.var(axis=0).mean() == pytest.approx(NeumannGaussianField().average_variance() / 9, rel=0.1)


def test_fine_solve_subsamples_onto_coarse_nodes_and_output_is_float64():
    coarse = helmholtz_sample(HelmholtzParameters(omega=200.0), 17, np.random.default_rng(3))
    fine = helmholtz_sample(
        HelmholtzParameters(omega=200.0, solve_resolution=33), 33, np.random.default_rng(3)
    )
    assert coarse["c"].dtype == coarse["u"].dtype == np.float64
    np.testing.assert_array_equal(coarse["c"], fine["c"][::2, ::2])
    np.testing.assert_allclose(coarse["u"], fine["u"][::2, ::2], rtol=1e-10, atol=1e-14)


def test_batch_samples_do_not_depend_on_their_batch_mates():
    params = HelmholtzParameters(omega=200.0)
    batch = helmholtz_batch(params, 17, [np.random.default_rng(i) for i in (5, 6)])
    alone = helmholtz_sample(params, 17, np.random.default_rng(6))
    assert batch["c"].shape == batch["u"].shape == (2, 17, 17)
    np.testing.assert_array_equal(batch["u"][1], alone["u"])


def test_default_solve_grid_reproduces_the_benchmark_and_refines_coarse_outputs():
    params = HelmholtzParameters()
    assert params.min_solve_cells() == 84  # 10 nodes on 2 pi 19 / 1000
    assert params.for_resolution(101).solve_resolution == 101
    assert params.for_resolution(17).solve_resolution == 97
    assert params.for_resolution(64).solve_resolution == 127
    assert HelmholtzParameters(solve_resolution=201).for_resolution(101).solve_resolution == 201


def test_reference_reproduces_a_benchmark_sample():
    params = HelmholtzParameters()
    sample = helmholtz_sample(params, 101, np.random.default_rng(8))
    stored = params.for_resolution(101)
    np.testing.assert_allclose(helmholtz_reference(stored, sample["c"]), sample["u"], rtol=1e-9, atol=1e-13)


def test_cli_generates_a_file_that_opens_in_xarray_and_regenerates_through_the_reference(tmp_path):
    out = tmp_path / "helmholtz.h5"
    # omega = 200 needs only 17 cells per side, so the 33-node output grid is also the solve grid.
    args = ["helmholtz", "--n", "3", "--resolution", "33", "--out", str(out), "--seed", "2"]
    assert datagen_main([*args, "--omega", "200", "--dtype", "float64", "--quiet"]) == 0
    family = get_family("helmholtz")
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"sample": 3, "x": 33, "y": 33}
        assert ds["c"].dims == ds["u"].dims == ("sample", "x", "y")
        np.testing.assert_allclose(ds["y"].values, np.linspace(0, 1, 33))
        attrs = ds.attrs
        assert attrs["pde"] == "helmholtz" and attrs["boundary_conditions"].startswith("neumann:")
        assert list(np.atleast_1d(attrs["input_fields"])) == ["c"]
        assert list(np.atleast_1d(attrs["output_fields"])) == ["u"]
        assert (attrs["omega"], attrs["tau"], attrs["alpha"], attrs["kl_modes"]) == (200.0, 3.0, 2.0, 100)
        assert (attrs["source_center"], attrs["source_width"], attrs["solve_resolution"]) == (0.5, 0.3, 33)
        c, u = ds["c"].values, ds["u"].values
    params = load_dataset(out).parameters  # what a trained model records and the server solves with
    assert c.min() > 19 and c.max() < 21 and np.abs(u).max() > 0
    for i in range(3):
        solved = family.reference(params, {"c": c[i]})["u"]
        np.testing.assert_allclose(solved, u[i], rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"omega": -1000.0}, "omega must be positive"),
        ({"omega": float("nan")}, "omega must be positive"),
        ({"speed_amplitude": 20.0}, "speed_amplitude must lie in"),
        ({"tau": -3.0}, "tau must be positive"),
        ({"alpha": 1.0}, "alpha must be > 1"),
        ({"kl_modes": -1}, "kl_modes must be a non-negative integer"),
        ({"source_center": 0.9}, "must lie within the top edge"),
        ({"source_width": 0.0}, "source_width must be positive"),
        ({"points_per_wavelength": 0.0}, "points_per_wavelength must be positive"),
        ({"solve_resolution": 2}, "solve_resolution must be at least 3"),
    ],
)
def test_bad_parameters_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HelmholtzParameters(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "resolution", "match"),
    [
        ({"solve_resolution": 151}, 101, "does not nest"),
        ({"solve_resolution": 65}, 33, "fewer than --points-per-wavelength 10"),
        ({"omega": 1e5}, 101, "exceeds 1025"),
    ],
)
def test_solve_grids_that_cannot_work_are_refused_before_any_solve(kwargs, resolution, match):
    with pytest.raises(ValueError, match=match):
        helmholtz_batch(HelmholtzParameters(**kwargs), resolution, [np.random.default_rng(0)])


def test_cli_refuses_a_negative_frequency_with_one_line_and_no_file(tmp_path, capsys):
    out = tmp_path / "x.h5"
    args = ["helmholtz", "--n", "2", "--resolution", "17", "--out", str(out), "--omega", "-1", "--quiet"]
    assert datagen_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "omega must be positive" in err[0]
    assert not out.exists() and not (tmp_path / "x.h5.partial").exists()
