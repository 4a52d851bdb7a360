"""1D viscous Burgers ``u_t + (u^2 / 2)_x = nu u_xx``, periodic on [0, 1), the FNO benchmark.

Benchmark distribution (Li et al. 2021, FNO): ``nu = 0.1``, ``u0 ~ N(0, 625 (-d^2/dx^2 + 25 I)^(-2))``
without its mean mode (see ``PeriodicGaussianField``), solved at 8192 points and subsampled; the operator
maps ``u0`` to ``u(t = 1)``. Nodes sit at ``x_i = i / n``, ``i = 0 .. n - 1``.

Scheme: Fourier pseudo-spectral in space with the 2/3 rule on the nonlinear term, ETDRK4 in time
(Cox and Matthews 2002): the viscous term is integrated exactly, the nonlinear term by a fourth-order
exponential Runge-Kutta method whose phi-function coefficients are evaluated by the Kassam-Trefethen
(2005) contour integral, which has no cancellation near ``nu k^2 dt = 0``.

Stability: the explicit part is linearised about a frozen constant state ``u = c``, which turns each
Fourier mode into ``v' = -nu kappa^2 v - i c kappa v``; ``for_resolution`` refuses a time step whose
ETDRK4 amplification factor exceeds 1 for any dealiased wavenumber ``kappa`` and any speed
``|c| <= U``. ``U`` bounds ``max |u|``: viscous Burgers obeys the maximum principle, so
``max |u(t)| <= max |u0|``, and ``U`` is ``SPEED_BOUND_STDS`` (8) pointwise standard deviations of
``u0``; a benchmark field exceeds that with probability about ``4e-14`` per sample (Rice formula).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import fft

from pdeserve.datagen.errors import SolverRefusal
from pdeserve.datagen.grids import check_time_grid, covering_steps, time_grid
from pdeserve.datagen.random_fields import PeriodicGaussianField

# max |u0| is bounded by this many pointwise standard deviations of the initial field.
SPEED_BOUND_STDS = 8.0
# The default time step must stay stable for twice the speed bound (margin for the nonlinearity).
DEFAULT_STEP_SAFETY = 2.0
# The default time step before the stability check: on benchmark samples ETDRK4 at this step is within
# about 6e-9 (relative L2, at t = 1) of a run with steps of 1e-4, below float32 rounding.
DEFAULT_STEP_CAP = 1e-3
# Speeds checked per unit of the speed bound (the amplification factor is smooth in the speed).
_SPEEDS_PER_BOUND = 32
# Points on the upper half of the Kassam-Trefethen contour (real arguments: the real part of the mean
# over the upper half equals the mean over the whole circle).
_CONTOUR_POINTS = 32


def wavenumbers(n: int) -> np.ndarray:
    """Angular wavenumbers ``2 pi k`` of the ``rfft`` modes ``k = 0 .. n // 2`` of an ``n``-point grid."""
    return 2.0 * np.pi * np.arange(n // 2 + 1)


def dealiased_modes(n: int) -> int:
    """How many low ``rfft`` modes the 2/3 rule keeps: ``k < n / 3``.

    A product of two fields with modes ``|k| < n / 3`` has modes ``|k| < 2 n / 3``, whose aliases on ``n``
    points all land at ``|k| > n / 3`` and are discarded.
    """
    return (n - 1) // 3 + 1


def etdrk4_coefficients(z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Dimensionless ETDRK4 coefficients for the linear parts ``z = dt * L`` (real, ``<= 0``).

    Returns ``(e, e2, q, f1, f2, f3)``: ``e = exp(z)``, ``e2 = exp(z / 2)``, ``q = (e2 - 1) / z`` and the
    Cox-Matthews weights ``f1 = (-4 - z + e (4 - 3 z + z^2)) / z^3``, ``f2 = (2 + z + e (z - 2)) / z^3``,
    ``f3 = (-4 - 3 z - z^2 + e (4 - z)) / z^3`` (each tends to 1/6 at ``z = 0``; ``q`` to 1/2). The step
    multiplies ``q`` and the ``f`` by ``dt``. The quotients are averaged over a circle of radius 1 around
    each ``z`` (Cauchy's formula; the trapezoid rule on the circle converges geometrically for these
    entire functions), which avoids the cancellation of the formulas near ``z = 0``.
    """
    z = np.asarray(z, dtype=np.float64)
    r = np.exp(1j * np.pi * (np.arange(1, _CONTOUR_POINTS + 1) - 0.5) / _CONTOUR_POINTS)
    zr = z[..., None] + r
    ezr = np.exp(zr)
    q = np.mean((np.exp(zr / 2.0) - 1.0) / zr, axis=-1).real
    f1 = np.mean((-4.0 - zr + ezr * (4.0 - 3.0 * zr + zr**2)) / zr**3, axis=-1).real
    f2 = np.mean((2.0 + zr + ezr * (zr - 2.0)) / zr**3, axis=-1).real
    f3 = np.mean((-4.0 - 3.0 * zr - zr**2 + ezr * (4.0 - zr)) / zr**3, axis=-1).real
    return np.exp(z), np.exp(z / 2.0), q, f1, f2, f3


def etdrk4_amplification(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ETDRK4's factor ``R`` in ``v(t + dt) = R v(t)`` for ``v' = L v + lam v``; ``z = dt L``, ``w = dt lam``.

    ``L`` is integrated exactly and ``lam v`` plays the explicit (nonlinear) term; ``z`` and ``w`` broadcast.
    ``R(0, w)`` is the classical RK4 polynomial ``1 + w + w^2/2 + w^3/6 + w^4/24``; ``R(z, 0) = exp(z)``.
    """
    e, e2, q, f1, f2, f3 = etdrk4_coefficients(z)
    a = e2 + q * w
    b = e2 + q * w * a
    c = e2 * a + q * w * (2.0 * b - 1.0)
    return e + w * (f1 + 2.0 * f2 * (a + b) + f3 * c)


def stability_factor(viscosity: float, dt: float, n: int, max_speed: float) -> float:
    """Largest ``|R|`` of the frozen-coefficient linearisation over the dealiased modes and speeds.

    Each dealiased mode ``kappa = 2 pi k`` (``1 <= k < n / 3``) of ``u_t + c u_x = nu u_xx`` has
    ``z = -nu kappa^2 dt`` and ``w = -i c kappa dt``; ``c`` runs over ``max_speed * j / 32`` for
    ``j = 1 .. 32`` (``|R|`` is even in ``c``). The step is linearly stable when the result is ``<= 1``.
    """
    kappa = wavenumbers(n)[1 : dealiased_modes(n)]
    speeds = max_speed / _SPEEDS_PER_BOUND * np.arange(1, _SPEEDS_PER_BOUND + 1)
    return _stability_factor(viscosity, dt, kappa, speeds)


def _stability_factor(viscosity: float, dt: float, kappa: np.ndarray, speeds: np.ndarray) -> float:
    z = (-viscosity * kappa**2 * dt)[:, None]
    w = -1j * dt * kappa[:, None] * speeds[None, :]
    return float(np.abs(etdrk4_amplification(z, w)).max()) if kappa.size else 0.0


def solve_burgers(u0: np.ndarray, viscosity: float, dt: float, times: np.ndarray) -> np.ndarray:
    """Solve ``u_t + (u^2 / 2)_x = nu u_xx`` on the periodic unit interval for a batch of initial states.

    Parameters
    ----------
    u0 : ndarray, shape (batch, n)
        Initial states at the nodes ``x_i = i / n`` (float64).
    viscosity : float
        ``nu > 0``.
    dt : float
        Largest time step. Each interval between consecutive ``times`` (and from 0 to the first) is cut
        into the fewest equal steps of at most ``dt``, so every recorded time is hit exactly. Stability
        is not checked here (see ``BurgersParameters.for_resolution``).
    times : ndarray, shape (T,)
        Non-decreasing times ``>= 0`` at which to return the solution.

    Returns
    -------
    ndarray, shape (batch, T, n): ``u`` at each time.

    Modes ``k >= n / 3`` never feel the dealiased nonlinear term, so they decay by their exact viscous
    factor; the ETDRK4 steps run on the low modes only, all samples at once.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if u0.ndim != 2:
        raise SolverRefusal(f"u0 must have shape (batch, n), got {u0.shape}")
    if times.ndim != 1 or times.size == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty, non-decreasing 1D array of times >= 0")
    if not viscosity > 0 or not dt > 0:
        raise ValueError(f"viscosity and dt must be positive, got {viscosity} and {dt}")
    n = u0.shape[1]
    kappa = wavenumbers(n)
    linear = -viscosity * kappa**2
    m = dealiased_modes(n)
    lin_low = linear[:m]
    # (u^2 / 2)_x in Fourier space, restricted to the kept modes.
    nonlinear_factor = -0.5j * kappa[:m]

    def nonlinear(v_low: np.ndarray) -> np.ndarray:
        # irfft zero-pads the missing high modes: this is the 2/3 rule's truncation before the product.
        u = fft.irfft(v_low, n, axis=-1)
        return nonlinear_factor * fft.rfft(u * u, axis=-1)[:, :m]

    spectrum = fft.rfft(u0, axis=-1)
    high = spectrum[:, m:]
    v = spectrum[:, :m].copy()
    out = np.empty((u0.shape[0], times.size, n))
    coefficients: dict[float, tuple[np.ndarray, ...]] = {}
    t = 0.0
    for j, t_next in enumerate(times):
        interval = float(t_next) - t
        if interval > 0:
            steps = covering_steps(interval, dt)
            h = interval / steps
            if h not in coefficients:
                e, e2, q, f1, f2, f3 = etdrk4_coefficients(h * lin_low)
                coefficients[h] = (e, e2, h * q, h * f1, 2.0 * h * f2, h * f3)
            e, e2, q, f1, f2, f3 = coefficients[h]
            for _ in range(steps):
                nv = nonlinear(v)
                a = e2 * v + q * nv
                na = nonlinear(a)
                b = e2 * v + q * na
                nb = nonlinear(b)
                c = e2 * a + q * (2.0 * nb - nv)
                nc = nonlinear(c)
                v = e * v + f1 * nv + f2 * (na + nb) + f3 * nc
            t = float(t_next)
        if t_next == 0:
            out[:, j] = u0  # exactly, without an FFT round trip
        else:
            full = np.concatenate([v, high * np.exp(linear[m:] * t_next)], axis=-1)
            out[:, j] = fft.irfft(full, n, axis=-1)
    return out


@dataclass(frozen=True)
class BurgersParameters:
    """Everything that defines the Burgers dataset distribution (recorded in the HDF5 attributes).

    Parameters
    ----------
    viscosity : float
        ``nu`` in ``u_t + (u^2 / 2)_x = nu u_xx`` (0.1 in the benchmark).
    final_time : float
        Time of the last stored state (1 in the benchmark).
    record_every : float or None
        ``None`` stores only ``u(final_time)``; otherwise ``u`` at ``record_every, 2 record_every, ...,
        final_time`` (``final_time`` must be a whole multiple of it).
    time_step : float or None
        Largest ETDRK4 step; each recording interval is cut into the fewest equal steps of at most this.
        ``None`` picks ``DEFAULT_STEP_CAP / 2^j`` (1e-3, halved as needed) with the smallest ``j`` whose
        step is linearly stable for twice the speed bound at the solve resolution and viscosity (see the
        module docstring); for the benchmark that is 1e-3 at every resolution.
    solve_resolution : int
        Points of the grid the solver runs on; stored fields are subsampled from it, so it must be a
        multiple of the output resolution (8192 in the benchmark).
    sigma, tau, alpha : float
        Parameters of the initial field ``N(0, sigma^2 (-d^2/dx^2 + tau^2 I)^(-alpha))`` (25, 5, 2).
    """

    viscosity: float = 0.1
    final_time: float = 1.0
    record_every: float | None = None
    time_step: float | None = None
    solve_resolution: int = 8192
    sigma: float = 25.0
    tau: float = 5.0
    alpha: float = 2.0

    def __post_init__(self) -> None:
        if not (self.viscosity > 0 and math.isfinite(self.viscosity)):
            raise ValueError(f"--viscosity must be positive, got {self.viscosity}")
        check_time_grid(self.final_time, self.record_every)
        if self.time_step is not None and not (self.time_step > 0 and math.isfinite(self.time_step)):
            raise ValueError(f"--time-step must be positive, got {self.time_step}")
        if self.solve_resolution < 4:
            raise ValueError(f"--solve-resolution must be at least 4, got {self.solve_resolution}")
        PeriodicGaussianField(self.sigma, self.tau, self.alpha)  # validates sigma, tau and alpha

    @property
    def field(self) -> PeriodicGaussianField:
        """The distribution of ``u0``."""
        return PeriodicGaussianField(self.sigma, self.tau, self.alpha)

    @property
    def speed_bound(self) -> float:
        """``U``: ``SPEED_BOUND_STDS`` pointwise standard deviations of ``u0`` at the solve resolution."""
        return SPEED_BOUND_STDS * self.field.pointwise_std(self.solve_resolution)

    @property
    def record_interval(self) -> float:
        """Time between stored states (``final_time`` when only the final state is stored)."""
        return self.final_time if self.record_every is None else self.final_time / len(record_times(self))

    def as_dict(self) -> dict:
        return asdict(self)

    def stability_factor(self, time_step: float, max_speed: float | None = None) -> float:
        """``stability_factor`` of the step taken for ``time_step`` (speeds up to ``speed_bound``)."""
        interval = self.record_interval
        step = interval / covering_steps(interval, time_step)
        speed = self.speed_bound if max_speed is None else max_speed
        return stability_factor(self.viscosity, step, self.solve_resolution, speed)

    def default_time_step(self) -> float:
        """The step ``time_step = None`` stands for (see the class docstring)."""
        dt = DEFAULT_STEP_CAP
        # |R| tends to exp(-nu kappa^2 dt) < 1 as the step shrinks, so the halving ends.
        while self.stability_factor(dt, DEFAULT_STEP_SAFETY * self.speed_bound) > 1.0:
            dt /= 2.0
        return dt

    def with_stable_time_step(self, resolution: int) -> BurgersParameters:
        """These parameters with a ``time_step`` that ``for_resolution`` would refuse lowered to
        ``default_time_step`` (unchanged where it is stable or unset): a step stable on one solve grid
        can be unstable on a finer one. The solve grid is ``solve_resolution``, whatever ``resolution``."""
        if self.time_step is None or self.stability_factor(self.time_step) <= 1.0 + 1e-9:
            return self
        return replace(self, time_step=min(self.time_step, self.default_time_step()))

    def on_grid(self, n: int) -> BurgersParameters:
        """These parameters for a solve on a grid of ``n`` points: on a grid finer than the solve
        resolution (a request finer than the model's data) an unstable step is lowered there."""
        if self.solve_resolution is None or n <= self.solve_resolution:
            return self  # a step stable on the solve grid is stable on any coarser one
        return replace(self, solve_resolution=n).with_stable_time_step(n)

    def for_resolution(self, resolution: int) -> BurgersParameters:
        """These parameters checked against the output ``resolution``, with ``time_step`` resolved.

        Refuses an output grid that is not a subsample of the solver grid and a time step for which the
        explicit nonlinear term is linearly unstable (before any work is done).
        """
        if resolution < 2:
            raise SolverRefusal(f"--resolution must be at least 2, got {resolution}")
        if self.solve_resolution % resolution:
            raise SolverRefusal(
                f"resolution {resolution} does not divide solve resolution {self.solve_resolution}: "
                "--solve-resolution must be a multiple of --resolution"
            )
        if self.time_step is None:
            return replace(self, time_step=self.default_time_step())
        factor = self.stability_factor(self.time_step)
        if factor > 1.0 + 1e-9:
            raise SolverRefusal(
                f"--time-step {self.time_step} is unstable at solve resolution {self.solve_resolution} and "
                f"viscosity {self.viscosity}: ETDRK4 amplifies the linearised explicit term by {factor:.3g} "
                f"per step for speeds up to {self.speed_bound:.3g} (a bound on max |u0|); use "
                f"--time-step {self.default_time_step():g} or leave it unset"
            )
        return self


def record_times(params: BurgersParameters) -> np.ndarray:
    """Times of the stored states, shape ``(T,)``: ``[final_time]`` or every ``record_every`` up to it."""
    return time_grid(params.final_time, params.record_every)


def burgers_batch(
    params: BurgersParameters, resolution: int, rngs: Sequence[np.random.Generator]
) -> dict[str, np.ndarray]:
    """Draw one ``u0`` per generator, solve them together at the solve resolution and subsample.

    Returns ``{"u0": (B, resolution), "u": (B, T, resolution)}`` with ``B = len(rngs)`` and the times of
    ``record_times(params)``. Each sample's randomness comes only from its own generator, and every
    operation acts on samples separately, so a sample does not depend on its batch-mates.
    """
    if params.time_step is None:
        params = params.for_resolution(resolution)
    n = params.solve_resolution
    stride = n // resolution
    times = record_times(params)
    if not rngs:
        return {"u0": np.zeros((0, resolution)), "u": np.zeros((0, times.size, resolution))}
    u0 = fft.irfft(np.stack([params.field.spectrum(n, rng) for rng in rngs]), n, axis=-1)
    u = solve_burgers(u0, params.viscosity, params.time_step, times)
    if not np.all(np.isfinite(u)):
        raise RuntimeError("the Burgers solution blew up: reduce --time-step")
    return {"u0": u0[:, ::stride], "u": u[:, :, ::stride]}


def burgers_sample(
    params: BurgersParameters, resolution: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One sample of ``burgers_batch``: ``{"u0": (resolution,), "u": (T, resolution)}``."""
    return {name: values[0] for name, values in burgers_batch(params, resolution, [rng]).items()}
