import numpy as np
import pytest
from scipy.special import ive

from pdeserve.datagen.burgers import (
    BurgersParameters,
    burgers_batch,
    burgers_sample,
    etdrk4_amplification,
    etdrk4_coefficients,
    record_times,
    solve_burgers,
)
from pdeserve.datagen.grids import periodic_coordinates
from pdeserve.datagen.random_fields import PeriodicGaussianField


def cole_hopf_sine(x: np.ndarray, t: float, nu: float, terms: int = 60) -> np.ndarray:
    """Exact solution for ``u0 = sin(2 pi x)``: ``u = -2 nu phi_x / phi`` with ``phi_t = nu phi_xx``.

    ``phi0 = exp(-(1 / 2 nu) int_0^x u0) = exp((cos 2 pi x - 1) / (4 pi nu))``, whose Fourier coefficients
    are modified Bessel functions: ``exp(a cos th) = I_0(a) + 2 sum_k I_k(a) cos(k th)``.
    """
    a = 1.0 / (4.0 * np.pi * nu)
    k = np.arange(1, terms)[:, None]
    # Exponentially scaled Bessel functions: the common factor exp(a) cancels in phi_x / phi.
    decay = ive(k, a) * np.exp(-nu * (2 * np.pi * k) ** 2 * t)
    phi = ive(0, a) + 2 * np.sum(decay * np.cos(2 * np.pi * k * x), axis=0)
    phi_x = 2 * np.sum(decay * (-2 * np.pi * k) * np.sin(2 * np.pi * k * x), axis=0)
    return -2 * nu * phi_x / phi


def smooth_state(n: int) -> np.ndarray:
    x = periodic_coordinates(n)
    return (np.sin(2 * np.pi * x) + 0.5 * np.cos(4 * np.pi * x) + 0.2 * np.sin(6 * np.pi * x))[None]


def test_etdrk4_coefficients_are_accurate_near_zero_and_far_from_it():
    z = np.array([-1e-9, -2.0, -10.0, -300.0])
    _, _, q, f1, f2, f3 = etdrk4_coefficients(z)
    zz, ez = z[1:], np.exp(z[1:])
    # Away from 0 the closed forms lose nothing to cancellation.
    np.testing.assert_allclose(q[1:], (np.exp(zz / 2) - 1) / zz, rtol=1e-13)
    np.testing.assert_allclose(f1[1:], (-4 - zz + ez * (4 - 3 * zz + zz**2)) / zz**3, rtol=1e-12)
    np.testing.assert_allclose(f2[1:], (2 + zz + ez * (zz - 2)) / zz**3, rtol=1e-12)
    np.testing.assert_allclose(f3[1:], (-4 - 3 * zz - zz**2 + ez * (4 - zz)) / zz**3, rtol=1e-12)
    # Near 0, where the closed forms cancel catastrophically, the limits 1/2 and 1/6.
    np.testing.assert_allclose([q[0], f1[0], f2[0], f3[0]], [0.5, 1 / 6, 1 / 6, 1 / 6], rtol=1e-8)
    # Without the explicit term the step is the exact exponential; without the stiff one it is RK4.
    np.testing.assert_allclose(etdrk4_amplification(z, 0.0), np.exp(z), rtol=1e-14)
    w = np.array([0.3 + 0.2j, 2.5j, -1.0])
    np.testing.assert_allclose(
        etdrk4_amplification(0.0, w), 1 + w + w**2 / 2 + w**3 / 6 + w**4 / 24, rtol=1e-14
    )


def test_etdrk4_converges_at_fourth_order_in_time():
    n, nu, t = 128, 0.1, 0.5
    u0 = smooth_state(n)
    reference = solve_burgers(u0, nu, t / 2048, np.array([t]))[0, -1]
    # Both runs share the grid, and n = 128 resolves the solution to rounding: the tail of the spectrum
    # is at rounding level, so the differences below are temporal errors only.
    spectrum = np.abs(np.fft.rfft(reference))
    assert spectrum[30:].max() < 1e-12 * spectrum.max()
    steps = np.array([32, 64, 128, 256])
    errors = np.array(
        [np.abs(solve_burgers(u0, nu, t / s, np.array([t]))[0, -1] - reference).max() for s in steps]
    )
    orders = np.log2(errors[:-1] / errors[1:])
    assert np.all((orders > 3.8) & (orders < 4.2)), (errors, orders)
    assert errors[-1] < 1e-10


@pytest.mark.parametrize(("nu", "n", "tolerance"), [(0.1, 64, 1e-11), (0.02, 256, 5e-11)])
def test_matches_the_cole_hopf_solution(nu, n, tolerance):
    # nu = 0.02 steepens sin(2 pi x) (max |u_x| from 2 pi to about 12 by t = 0.1): harder than nu = 0.1.
    x = periodic_coordinates(n)
    times = np.array([0.05, 0.1])
    u = solve_burgers(np.sin(2 * np.pi * x)[None], nu, 5e-4, times)[0]
    assert np.abs(cole_hopf_sine(x, 0.0, nu) - np.sin(2 * np.pi * x)).max() < 1e-12
    for j, t in enumerate(times):
        error = np.abs(u[j] - cole_hopf_sine(x, t, nu)).max()
        assert error < tolerance, (t, error)


def test_mean_is_conserved_and_energy_decays():
    params = BurgersParameters(solve_resolution=256, record_every=0.05, final_time=0.5).for_resolution(256)
    sample = burgers_sample(params, 256, np.random.default_rng(5))
    u = np.concatenate([sample["u0"][None], sample["u"]])
    assert np.abs(u.mean(axis=1)).max() < 1e-12
    energy = (u**2).mean(axis=1)
    assert np.all(np.diff(energy) < 0), energy
    assert energy[-1] < 0.5 * energy[0]  # nu = 0.1 dissipates quickly
    # A nonzero mean (a Galilean shift) is carried unchanged too.
    shifted = solve_burgers(0.3 + smooth_state(64), 0.1, 1e-2, np.array([0.1, 0.5]))[0]
    np.testing.assert_allclose(shifted.mean(axis=1), 0.3, atol=1e-12)


def test_dealiased_nonlinear_term_conserves_energy():
    # With the 2/3 rule the truncated nonlinear term is orthogonal to u, so without viscosity the energy
    # is conserved even for a state with energy up to the grid scale; aliasing would change it by ~10%.
    n = 32
    rng = np.random.default_rng(0)
    spectrum = np.zeros(n // 2 + 1, dtype=complex)
    spectrum[1 : n // 2] = rng.standard_normal(n // 2 - 1) + 1j * rng.standard_normal(n // 2 - 1)
    u0 = np.fft.irfft(spectrum, n)[None]
    u0 /= np.abs(u0).max()
    u = solve_burgers(u0, 1e-12, 1e-4, np.array([0.02, 0.05]))[0]
    drift = (u**2).mean(axis=1) / (u0**2).mean() - 1
    assert np.abs(drift).max() < 1e-8, drift


def test_sample_does_not_depend_on_its_batch():
    params = BurgersParameters(solve_resolution=128, final_time=0.2, record_every=0.1).for_resolution(32)
    batch = burgers_batch(params, 32, [np.random.default_rng(s) for s in (10, 11, 12)])
    assert batch["u0"].shape == (3, 32) and batch["u"].shape == (3, 2, 32)
    for i, seed in enumerate((10, 11, 12)):
        single = burgers_batch(params, 32, [np.random.default_rng(seed)])
        np.testing.assert_array_equal(batch["u0"][i], single["u0"][0])
        np.testing.assert_array_equal(batch["u"][i], single["u"][0])
    # The coarse fields are the fine solve's nodes.
    fine = burgers_batch(params.for_resolution(128), 128, [np.random.default_rng(11)])
    np.testing.assert_array_equal(batch["u"][1], fine["u"][0][:, ::4])


def test_record_times_and_default_step():
    np.testing.assert_array_equal(record_times(BurgersParameters()), [1.0])
    times = record_times(BurgersParameters(record_every=0.1))
    assert times.shape == (10,) and times[-1] == 1.0
    np.testing.assert_allclose(times, 0.1 * np.arange(1, 11), rtol=1e-15)
    resolved = BurgersParameters().for_resolution(1024)
    assert resolved.time_step == 1e-3
    assert resolved.for_resolution(1024) == resolved
    # Less viscosity, less damping of the explicit term: the default step shrinks.
    assert BurgersParameters(viscosity=1e-3).for_resolution(1024).time_step < 1e-4


def test_unstable_time_step_is_refused_and_really_is_unstable():
    base = BurgersParameters(solve_resolution=64)
    assert base.for_resolution(64).time_step is not None
    BurgersParameters(solve_resolution=64, time_step=0.02).for_resolution(64)  # accepted
    with pytest.raises(ValueError, match=r"--time-step 0.025 is unstable at solve resolution 64"):
        BurgersParameters(solve_resolution=64, time_step=0.025).for_resolution(64)
    # The bound is sharp for the state it assumes: u at the speed bound plus a small perturbation.
    perturbed = base.speed_bound + 1e-6 * PeriodicGaussianField().sample(64, np.random.default_rng(0))
    with np.errstate(all="ignore"):
        stable = solve_burgers(perturbed[None], 0.1, 0.02, np.array([4.0]))
        unstable = solve_burgers(perturbed[None], 0.1, 0.025, np.array([4.0]))
    assert np.abs(stable - base.speed_bound).max() < 1e-6
    assert not np.all(np.abs(unstable - base.speed_bound) < 1.0)


@pytest.mark.parametrize(
    ("options", "resolution", "message"),
    [
        ({"viscosity": -0.1}, 64, "--viscosity must be positive, got -0.1"),
        ({"final_time": 0.0}, 64, "--final-time must be positive"),
        ({"record_every": 0.3}, 64, "--record-every 0.3 does not divide --final-time 1.0"),
        ({"time_step": -1e-3}, 64, "--time-step must be positive"),
        ({"sigma": 0.0}, 64, "--sigma must be positive"),
        ({"alpha": 0.5}, 64, "--alpha must exceed 0.5"),
        ({}, 100, "resolution 100 does not divide solve resolution 8192"),
        ({"time_step": 0.5}, 1024, "--time-step 0.5 is unstable"),
    ],
)
def test_invalid_options_are_refused_with_a_clear_message(options, resolution, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("-", r"\-")):
        BurgersParameters(**options).for_resolution(resolution)


def test_steps_are_cut_to_land_on_every_recorded_time():
    u0 = smooth_state(32)
    # 0.1 / 0.03 rounds up to 4 equal steps of 0.025; the next interval, 0.15, takes 5 steps of 0.03.
    u = solve_burgers(u0, 0.1, 0.03, np.array([0.1, 0.25]))
    np.testing.assert_array_equal(u[:, 0], solve_burgers(u0, 0.1, 0.025, np.array([0.1]))[:, 0])
    restarted = solve_burgers(u[:, 0], 0.1, 0.03, np.array([0.15]))[:, 0]
    np.testing.assert_allclose(u[:, 1], restarted, rtol=0, atol=1e-14)  # FFT round trip of the restart
    # A recorded time of 0 returns the initial state.
    np.testing.assert_array_equal(solve_burgers(u0, 0.1, 0.03, np.array([0.0]))[:, 0], u0)


def test_a_solve_on_a_grid_finer_than_the_data_lowers_an_unstable_step():
    card = BurgersParameters(viscosity=1e-3, solve_resolution=256).for_resolution(64)
    assert card.on_grid(128) is card and card.on_grid(256) is card
    fine = card.on_grid(1024)
    assert card.stability_factor(card.time_step) <= 1
    assert fine.solve_resolution == 1024 and fine.time_step < card.time_step
    assert fine.stability_factor(fine.time_step) <= 1
