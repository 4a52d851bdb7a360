import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from pdeserve.datagen.grids import periodic_coordinates
from pdeserve.datagen.navier_stokes import (
    BIOT_SAVART_L1,
    NavierStokesParameters,
    cnab2_amplification,
    forcing_field,
    navier_stokes_batch,
    navier_stokes_reference,
    navier_stokes_sample,
    record_times,
    solve_navier_stokes,
    stability_factor,
)
from pdeserve.datagen.random_fields import TorusGaussianField

# A short, cheap configuration for the tests that go through navier_stokes_batch.
SHORT = NavierStokesParameters(final_time=0.02, record_every=0.01, time_step=1e-3)


def mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = periodic_coordinates(n)
    return np.meshgrid(x, x, indexing="ij")


def solve(w0: np.ndarray, forcing: np.ndarray | float, nu: float, dt: float, times) -> np.ndarray:
    """``solve_navier_stokes`` on numpy arrays, for one state ``(n, n)``: returns ``(T, n, n)``."""
    n = w0.shape[-1]
    f = np.array(np.broadcast_to(np.asarray(forcing, dtype=np.float64), (n, n)))
    return solve_navier_stokes(torch.as_tensor(w0[None]), torch.as_tensor(f), nu, dt, times)[0].numpy()


def test_single_shell_vorticity_decays_exactly_without_forcing():
    # Every mode on the shell |k|^2 = 25 has psi = w / (4 pi^2 25): u . grad w = J(psi, w) = 0, so the
    # solution is w0 exp(-nu 100 pi^2 t). Amplitudes of order 1 make a wrong nonlinear term visible.
    n, nu, dt = 32, 1e-3, 2e-3
    x, y = mesh(n)
    w0 = (
        3 * np.cos(10 * np.pi * x)
        + 2 * np.sin(2 * np.pi * (3 * x + 4 * y))
        + np.cos(2 * np.pi * (4 * x - 3 * y))
    )
    # Two modes beyond the 2/3 rule (|k| >= 32 / 3), which the nonlinear term neither reads nor writes:
    # k = (8, 8) inside the block |k_x|, |k_y| <= 10 that the time loop steps, k = (3, 13) outside it,
    # advanced in closed form.
    passive = {128: 0.5 * np.cos(16 * np.pi * (x + y)), 178: 0.25 * np.sin(2 * np.pi * (3 * x + 13 * y))}
    times = np.array([0.5, 1.0])
    w = solve(w0 + sum(passive.values()), 0.0, nu, dt, times)
    steps = np.round(times / dt)

    def crank_nicolson(k2: int) -> np.ndarray:
        z = nu * 4 * np.pi**2 * k2 * dt
        return ((1 - z / 2) / (1 + z / 2)) ** steps

    expected = crank_nicolson(25)[:, None, None] * w0
    for k2, mode in passive.items():
        expected = expected + crank_nicolson(k2)[:, None, None] * mode
    # Rounding only against the scheme's own factors (AB2 extrapolates a zero nonlinear term).
    assert np.abs(w - expected).max() < 1e-12 * np.abs(w0).max()
    rate = nu * 4 * np.pi**2 * 25
    for j, t in enumerate(times):
        # Within 1e-6 of the exact decay.
        shell = w[j] - sum(crank_nicolson(k2)[j] * mode for k2, mode in passive.items())
        assert np.abs(shell - np.exp(-rate * t) * w0).max() < 1e-6 * np.abs(w0).max()


def test_forced_single_shell_solution_relaxes_to_the_laminar_state():
    # The forcing lives on the shell |k|^2 = 2; a w0 on that shell keeps the nonlinear term zero, so
    # w(t) = f / lam + (w0 - f / lam) exp(-lam t) with lam = 8 pi^2 nu: checks the forcing's sign and size.
    n, nu, dt = 16, 1e-2, 2e-3
    x, y = mesh(n)
    f = forcing_field(n, 0.1)
    w0 = np.cos(2 * np.pi * (x - y))
    # Plus forcing beyond the 2/3 rule, on k = (4, 4) inside the block |k_x|, |k_y| <= 5 that the time loop
    # steps and on k = (3, 7) outside it (advanced in closed form): each relaxes to g / (nu kappa^2) alone.
    extra = {32: 0.05 * np.sin(8 * np.pi * (x + y)), 58: 0.05 * np.cos(2 * np.pi * (3 * x + 7 * y))}
    times = np.array([1.0, 2.0])
    w = solve(w0, f + sum(extra.values()), nu, dt, times)
    lam = 8 * np.pi**2 * nu
    for j, t in enumerate(times):
        exact = f / lam + (w0 - f / lam) * np.exp(-lam * t)
        for k2, g in extra.items():
            lam_g = 4 * np.pi**2 * k2 * nu
            exact = exact + g / lam_g * (1 - np.exp(-lam_g * t))
        assert np.abs(w[j] - exact).max() < 1e-6 * np.abs(exact).max()
    np.testing.assert_allclose(
        f, 0.1 * (np.sin(2 * np.pi * (x + y)) + np.cos(2 * np.pi * (x + y))), atol=1e-15
    )


def test_converges_at_second_order_in_time():
    # A benchmark field scaled by 10 (max |u| about 0.3) makes the advection matter; nu = 1e-2 makes the
    # Crank-Nicolson part stiff on the highest kept modes. Same grid for every run: only time errors differ.
    # Crank-Nicolson/AB2 after one Crank-Nicolson/Heun step: the observed order is 2.
    n, nu, final = 32, 1e-2, 1.0
    w0 = 10 * TorusGaussianField().sample(n, np.random.default_rng(1))
    f = forcing_field(n, 0.1)
    reference = solve(w0, f, nu, final / 4096, [final])[-1]
    steps = np.array([16, 32, 64, 128])
    errors = np.array([np.abs(solve(w0, f, nu, final / s, [final])[-1] - reference).max() for s in steps])
    orders = np.log2(errors[:-1] / errors[1:])
    assert np.all((orders > 1.9) & (orders < 2.1)), (errors, orders)
    assert errors[-1] < 2e-4 * np.abs(reference).max()


def test_second_order_when_the_step_size_alternates():
    # Stored times alternately h and 2 h apart, with dt = 2 h: every step changes the step size, so the
    # variable-step AB2 weights act at every step (constant-step weights there give first order).
    n, nu = 32, 1e-2
    w0 = 10 * TorusGaussianField().sample(n, np.random.default_rng(1))
    f = forcing_field(n, 0.1)
    reference = solve(w0, f, nu, 1.0 / 3072, [1.0])[-1]
    cycles = np.array([8, 16, 32, 64])
    errors = []
    for count in cycles:
        h = 1.0 / (3 * count)
        times = np.cumsum(np.tile([h, 2 * h], count))
        errors.append(np.abs(solve(w0, f, nu, 2 * h, times)[-1] - reference).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.9) & (orders < 2.1)), (errors, orders)


def kinetic_energy(w: np.ndarray) -> np.ndarray:
    """``sum |u|^2 / 2`` over the nodes, per state, from the vorticity ``(..., n, n)`` (mean mode ignored)."""
    n = w.shape[-1]
    k = np.fft.fftfreq(n, 1 / n)
    k2 = 4 * np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    k2[0, 0] = np.inf
    return 0.5 * np.sum(np.abs(np.fft.fft2(w)) ** 2 / k2, axis=(-1, -2)) / n**2


def test_mean_is_conserved_and_enstrophy_decays_without_forcing():
    n = 32
    w0 = 10 * TorusGaussianField().sample(n, np.random.default_rng(2))
    times = np.linspace(0.05, 2.0, 40)
    forced = solve(w0, forcing_field(n, 0.1), 1e-3, 1e-3, times)
    assert abs(w0.mean()) < 1e-15
    assert np.abs(forced.mean(axis=(-1, -2))).max() < 1e-12
    free = solve(w0, 0.0, 1e-3, 1e-3, times)
    enstrophy = np.concatenate([[np.mean(w0**2)], np.mean(free**2, axis=(-1, -2))])
    assert np.all(np.diff(enstrophy) < 0), np.diff(enstrophy)
    energy = kinetic_energy(np.concatenate([w0[None], free]))
    assert np.all(np.diff(energy) < 0), np.diff(energy)
    # The flow did move: the dissipation is not all there is to it.
    assert np.abs(free[-1] - free[0]).max() > 0.1 * np.abs(w0).max()


def test_amplification_factor_limits_and_stability_check():
    # Without advection the roots are the Crank-Nicolson factor and 0.
    y = np.array([0.0, 0.01, 1.0, 2.0, 10.0])
    np.testing.assert_allclose(cnab2_amplification(y, 0.0), np.abs((1 - y / 2) / (1 + y / 2)), rtol=1e-15)
    # AB2 is weakly unstable for pure advection: |rho| = 1 + s^4 / 4 + O(s^6).
    s = np.array([1e-3, 1e-2, 3e-2])
    np.testing.assert_allclose((cnab2_amplification(0.0, s) - 1) / s**4, 0.25, rtol=1e-2)
    # Against numpy's roots of (1 + y / 2) r^2 - (1 - y / 2 - 3 i s / 2) r - i s / 2.
    rng = np.random.default_rng(0)
    for y, s in zip(10.0 ** rng.uniform(-6, 2, 50), 10.0 ** rng.uniform(-4, 1, 50), strict=True):
        roots = np.roots([1 + y / 2, -(1 - y / 2 - 1.5j * s), -0.5j * s])
        assert cnab2_amplification(y, s) == pytest.approx(np.abs(roots).max(), rel=1e-12)
    # And against the recursion itself: its growth per step, after the other root has died out.
    y, s = 1e-3, 0.3
    v = [1.0 + 0j, 1.0 + 0j]
    for _ in range(400):
        v.append(((1 - y / 2) * v[-1] - 0.5j * s * (3 * v[-1] - v[-2])) / (1 + y / 2))
    assert abs(v[-1] / v[-2]) == pytest.approx(cnab2_amplification(y, s), rel=1e-12)
    assert stability_factor(1e-3, 1e-4, 64, 3.6) <= 1.0
    assert stability_factor(1e-9, 1e-3, 64, 3.6) > 1.0


def test_biot_savart_constant_bounds_the_kernel_norm():
    # ||K||_1 of the Fourier-truncated kernel converges at first order in 1/n; extrapolate and compare.
    def truncated_norm(n: int) -> float:
        k = np.fft.fftfreq(n, 1 / n)
        kx, ky = k[:, None], k[None, :]
        k2 = 4 * np.pi**2 * (kx**2 + ky**2)
        k2[0, 0] = 1.0
        ux = np.fft.ifft2(2j * np.pi * ky / k2).real * n * n
        uy = np.fft.ifft2(-2j * np.pi * kx / k2).real * n * n
        return float(np.hypot(ux, uy).mean())

    coarse, fine = truncated_norm(512), truncated_norm(1024)
    limit = 2 * fine - coarse
    assert 0.385 < limit < 0.3880 < BIOT_SAVART_L1


def test_benchmark_times_and_parameters():
    params = NavierStokesParameters()
    np.testing.assert_array_equal(record_times(params), np.arange(1.0, 51.0))
    assert params.step == pytest.approx(1e-4, rel=1e-12)
    assert params.as_dict()["viscosity"] == 1e-3
    assert params.as_dict()["sigma"] == pytest.approx(18.520259177452136)
    np.testing.assert_allclose(
        record_times(NavierStokesParameters(final_time=1.0, record_every=0.1))[-1], 1.0
    )


# The benchmark's viscosities with their final times (Li et al. 2021).
@pytest.mark.parametrize(("viscosity", "final_time"), [(1e-3, 50.0), (1e-4, 30.0), (1e-5, 20.0)])
@pytest.mark.parametrize(("resolution", "solve_resolution"), [(64, None), (64, 256), (256, None)])
def test_benchmark_viscosities_are_accepted(viscosity, final_time, resolution, solve_resolution):
    params = NavierStokesParameters(
        viscosity=viscosity, final_time=final_time, time_step=1e-4, solve_resolution=solve_resolution
    )
    resolved = params.for_resolution(resolution)
    assert resolved.solve_resolution == (solve_resolution or resolution)
    assert resolved.stability_factor(resolved.solve_resolution) <= 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"viscosity": -1e-3}, "--viscosity must be positive, got -0.001"),
        ({"viscosity": 0.0}, "--viscosity must be positive"),
        ({"time_step": 0.0}, "--time-step must be positive"),
        ({"final_time": -1.0}, "--final-time must be positive"),
        ({"record_every": 0.0}, "--record-every must be positive"),
        ({"record_every": 0.3}, "--record-every 0.3 does not divide --final-time 50.0"),
        ({"record_every": 60.0}, "--record-every 60.0 does not divide --final-time 50.0"),
        ({"solve_resolution": 4}, "--solve-resolution must be at least 8"),
        ({"forcing_amplitude": float("nan")}, "--forcing-amplitude must be finite"),
        ({"alpha": 1.0}, "--alpha must exceed 1"),
        ({"tau": 0.0}, "--tau must be positive"),
        ({"sigma": -1.0}, "--sigma must be positive"),
    ],
)
def test_invalid_parameters_are_refused(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        NavierStokesParameters(**options)


def test_resolution_that_does_not_divide_the_solve_resolution_is_refused():
    with pytest.raises(ValueError, match="resolution 64 does not divide solve resolution 100"):
        NavierStokesParameters(solve_resolution=100).for_resolution(64)


def test_unstable_time_step_is_refused_with_a_stable_suggestion():
    params = NavierStokesParameters(viscosity=1e-5, time_step=1e-3, final_time=20.0)
    with pytest.raises(ValueError, match=r"--time-step 0\.001 is unstable at solve resolution 256") as error:
        params.for_resolution(256)
    assert len(str(error.value).splitlines()) == 1
    suggested = float(re.search(r"use --time-step (\S+) or smaller", str(error.value)).group(1))
    assert 1e-4 <= suggested < 1e-3
    NavierStokesParameters(viscosity=1e-5, time_step=suggested, final_time=20.0).for_resolution(256)
    # The bound grows with the final time: nu = 1e-5 run to the default T = 50 at 256 needs a step below
    # the benchmark's 1e-4 (U <= 3.40 allowed, 3.58 bounded), and a longer run still less.
    with pytest.raises(ValueError, match=r"0\.0001 is unstable .* use --time-step 9\.3e-05 or smaller"):
        NavierStokesParameters(viscosity=1e-5).for_resolution(256)
    NavierStokesParameters(viscosity=1e-5, time_step=9.3e-5).for_resolution(256)
    with pytest.raises(ValueError, match="unstable"):
        NavierStokesParameters(viscosity=1e-5, final_time=200.0, time_step=9.3e-5).for_resolution(256)


def test_a_sample_does_not_depend_on_its_batch_mates():
    params = SHORT.for_resolution(16)
    alone = navier_stokes_sample(params, 16, np.random.default_rng(5))
    batch = navier_stokes_batch(params, 16, [np.random.default_rng(s) for s in (1, 5, 2)], device="cpu")
    assert batch["w0"].shape == (3, 16, 16) and batch["w"].shape == (3, 2, 16, 16)
    assert batch["w"].dtype == np.float64
    np.testing.assert_array_equal(batch["w0"][1], alone["w0"])
    np.testing.assert_allclose(batch["w"][1], alone["w"], rtol=0, atol=1e-12)
    assert not np.allclose(batch["w"][0], batch["w"][1])


def test_fine_solve_subsamples_onto_coarse_nodes():
    coarse = navier_stokes_sample(
        NavierStokesParameters(final_time=0.02, record_every=0.01, time_step=1e-3, solve_resolution=32),
        16,
        np.random.default_rng(3),
    )
    fine = navier_stokes_sample(SHORT, 32, np.random.default_rng(3))
    np.testing.assert_array_equal(coarse["w0"], fine["w0"][::2, ::2])
    np.testing.assert_allclose(coarse["w"], fine["w"][:, ::2, ::2], rtol=0, atol=1e-14)


def test_reference_solver_reproduces_a_sample():
    sample = navier_stokes_sample(SHORT, 16, np.random.default_rng(9))
    np.testing.assert_allclose(
        navier_stokes_reference(SHORT, sample["w0"], device="cpu"), sample["w"], atol=1e-14
    )
    assert navier_stokes_reference(SHORT, sample["w0"][None], device="cpu").shape == (1, 2, 16, 16)


def test_float32_solver_agrees_with_float64():
    params = SHORT.for_resolution(32)
    rngs = [np.random.default_rng(4)]
    double = navier_stokes_batch(params, 32, rngs, device="cpu")["w"]
    single = navier_stokes_batch(params, 32, [np.random.default_rng(4)], device="cpu", dtype=torch.float32)[
        "w"
    ]
    assert np.abs(single - double).max() < 1e-5 * np.abs(double).max()


def test_solver_lands_on_zero_and_repeated_times_exactly():
    w0 = TorusGaussianField().sample(16, np.random.default_rng(6))
    w = solve(w0, 0.0, 1e-3, 1e-3, [0.0, 0.005, 0.005])
    np.testing.assert_array_equal(w[0], w0)
    np.testing.assert_array_equal(w[1], w[2])
    with pytest.raises(ValueError, match="non-decreasing"):
        solve(w0, 0.0, 1e-3, 1e-3, [0.01, 0.005])


def test_importing_the_module_does_not_import_torch():
    # The CLI imports every family to parse its options; torch costs seconds to import.
    code = "import sys, pdeserve.datagen.navier_stokes; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    params = SHORT.for_resolution(64)
    rngs = lambda: [np.random.default_rng(s) for s in (1, 2)]  # noqa: E731
    cpu = navier_stokes_batch(params, 64, rngs(), device="cpu")
    cuda = navier_stokes_batch(params, 64, rngs(), device="cuda")
    np.testing.assert_array_equal(cpu["w0"], cuda["w0"])
    np.testing.assert_allclose(cuda["w"], cpu["w"], rtol=0, atol=1e-12)


def test_a_reference_on_a_grid_finer_than_the_time_steps_uses_the_largest_stable_step():
    # A model's step is the largest stable on its training grid; a reference on a finer grid would
    # refuse it. The reference lowers it instead and agrees with a sample solved at that step.
    coarse_step = replace(SHORT, time_step=0.01)  # stable at 32, not at 64
    assert coarse_step.stability_factor(64) > 1
    fine_step = replace(SHORT, time_step=coarse_step.max_stable_time_step(64))
    sample = navier_stokes_sample(fine_step, 64, np.random.default_rng(4))
    np.testing.assert_allclose(
        navier_stokes_reference(coarse_step, sample["w0"], device="cpu"), sample["w"], atol=1e-12
    )


def test_the_refining_solver_on_a_grid_finer_than_the_time_steps_uses_a_stable_step():
    from pdeserve.datagen.indicators import navier_stokes_advance

    coarse_step = replace(SHORT, time_step=0.01)  # stable at 32, not at 64
    fine_step = replace(SHORT, time_step=coarse_step.max_stable_time_step(64))
    sample = navier_stokes_sample(fine_step, 64, np.random.default_rng(5))
    offsets = record_times(SHORT)
    np.testing.assert_allclose(
        navier_stokes_advance(coarse_step, sample["w0"], offsets), sample["w"], atol=1e-12
    )
