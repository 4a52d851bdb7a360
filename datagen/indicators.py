"""A-posteriori error indicators: how far a proposed solution is from the truth, judged by the PDE itself.

Each indicator takes one sample's parameters, inputs and proposed outputs (a surrogate's answer) and
returns a non-negative number that grows with the solution's relative L2 error, at a small fraction of
a classical solve's cost. An indicator is not an error bound by itself: pdeserve calibrates it against
true errors on held-out samples (split-conformal, ``operators/validation.py``) and serves the
calibrated estimate with its coverage.

- Darcy (a linear, symmetric positive definite system ``A u = f``): the error of ``u`` is exactly
  ``A^-1 (f - A u)``. The indicator replaces ``A^-1`` by the inverse of a spectrally equivalent
  operator, ``-a_mean Laplace_h`` with ``a_mean`` the coefficient's geometric mean, which a sine
  transform applies in ``O(n^2 log n)``: within the coefficient's contrast of the true error.
- Helmholtz (indefinite, so no cheap equivalent inverse): the relative residual ``||b - K u|| / ||b||``
  of the finite-element system on the answer's grid: the system the data generator solves when that
  grid resolves the wavelength (the benchmark's 101 x 101: exact solution 1e-13, 1% noise 0.52); on a
  coarser grid, whose reference is solved finer and subsampled, the residual keeps a floor of that grid's
  pollution error (0.33 at 51 x 51), which the calibration absorbs.
- Burgers and Navier-Stokes (time-dependent): the two-solution estimator. The classical solver runs
  from the last input state over the output times on a grid of half the side (at least
  :data:`MIN_COARSE_SIDE`), with the largest step its stability check admits there; the indicator is
  ``||proposed - coarse|| / ||coarse||``, the coarse states Fourier-interpolated to the proposed grid.
  The coarse solution's own error is far below a surrogate's, so the indicator tracks the surrogate's
  error: for Navier-Stokes at 64 x 64 (``nu = 1e-3``, states one time unit apart) the exact states
  score 1e-4 and 1% noise 0.0100, at a coarse solve about 1% of the classical one's time; for Burgers
  at 128 points, error / indicator lies in 0.54..1.07 for a small FNO's answers.
  A trapezoidal consistency residual between consecutive states was tried first and dropped: at
  the benchmark's record interval (``dt = 1``) the time-discretisation defect of the exact solution
  dominates it (about 0.35 for Navier-Stokes) and 1% noise barely moves it.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
from scipy import fft, signal

from pdeserve.datagen import burgers, navier_stokes
from pdeserve.datagen.errors import SolverRefusal
from pdeserve.datagen.grids import UnitSquareGrid

# The coarse grid of the two-solution estimator: half the answer's side, never below this.
MIN_COARSE_SIDE = 16


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("inf")


def darcy_operator(a: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``-div(a grad u)`` at the interior nodes by the 5-point scheme of ``assemble_darcy``, applied
    without assembling the matrix (the stencil is used once per sample, so building the sparse matrix
    would cost more than applying it).

    Parameters
    ----------
    a : ndarray, shape (..., n, n)
        Positive coefficient at the nodes (boundary nodes set the face values).
    u : ndarray, shape (..., n, n)
        Values at the nodes; the boundary values are taken as zero, as the matrix drops the couplings
        to boundary nodes.

    Returns
    -------
    ndarray of shape (..., n - 2, n - 2): the matrix of ``assemble_darcy`` times the interior of ``u``.
    """
    a = np.asarray(a, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    n = a.shape[-1]
    if a.ndim < 2 or a.shape[-2] != n or u.shape != a.shape:
        raise SolverRefusal(f"a and u must both have shape (..., n, n), got {a.shape} and {u.shape}")
    h2 = UnitSquareGrid(n).h ** 2
    padded = np.zeros_like(u)
    padded[..., 1:-1, 1:-1] = u[..., 1:-1, 1:-1]
    # Face coefficients (mean of the two nodes) and fluxes across every face along each axis; a face
    # on the boundary side couples to a zero value.
    face_x = 0.5 * (a[..., 1:, 1:-1] + a[..., :-1, 1:-1])
    flux_x = face_x * (padded[..., 1:, 1:-1] - padded[..., :-1, 1:-1])
    face_y = 0.5 * (a[..., 1:-1, 1:] + a[..., 1:-1, :-1])
    flux_y = face_y * (padded[..., 1:-1, 1:] - padded[..., 1:-1, :-1])
    return ((flux_x[..., :-1, :] - flux_x[..., 1:, :]) + (flux_y[..., :, :-1] - flux_y[..., :, 1:])) / h2


@functools.lru_cache(maxsize=16)
def _laplace_eigenvalues(n: int) -> np.ndarray:
    """Eigenvalues of the Dirichlet 5-point Laplacian on the interior nodes of an ``n x n`` grid, shape
    ``(n - 2, n - 2)`` (read-only: cached per side), in the order of the DST-I that diagonalises it."""
    grid = UnitSquareGrid(n)
    k = np.arange(1, n - 1)
    eigen = (2.0 - 2.0 * np.cos(np.pi * k / (n - 1))) / grid.h**2
    out = eigen[:, None] + eigen[None, :]
    out.flags.writeable = False
    return out


def darcy_indicator(a: np.ndarray, u: np.ndarray, forcing: float) -> float | np.ndarray:
    """Approximate relative L2 error of ``u`` as a solution of ``-div(a grad u) = forcing``, ``u = 0``
    on the boundary (the data generator's 5-point scheme on ``a``'s grid).

    Parameters
    ----------
    a : ndarray, shape (..., n, n)
        Positive coefficient at the nodes; leading axes are a batch of samples.
    u : ndarray, shape (..., n, n)
        Proposed solution at the nodes (its boundary values are taken as zero, as the problem says).
    forcing : float
        The constant right-hand side.

    Returns
    -------
    float for one sample (``a`` of shape (n, n)); otherwise an array of the batch shape.
    """
    a = np.asarray(a, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    n = a.shape[-1]
    residual = forcing - darcy_operator(a, u)
    interior = u[..., 1:-1, 1:-1]
    a_mean = np.exp(np.mean(np.log(a), axis=(-2, -1)))[..., None, None]
    axes = (-2, -1)
    spectrum = fft.dstn(residual, type=1, axes=axes) / (a_mean * _laplace_eigenvalues(n))
    error = fft.idstn(spectrum, type=1, axes=axes)
    numerator, denominator = np.linalg.norm(error, axis=axes), np.linalg.norm(interior, axis=axes)
    if a.ndim == 2:
        return _ratio(numerator, denominator)
    # As for one sample: a zero answer scores infinity.
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.inf)


def linear_residual(matrix, u: np.ndarray, load: np.ndarray) -> float:
    """``||load - matrix u|| / ||load||`` for a proposed solution ``u`` of ``matrix u = load``."""
    load = np.asarray(load, dtype=np.float64).ravel()
    residual = load - matrix @ np.asarray(u, dtype=np.float64).ravel()
    return _ratio(np.linalg.norm(residual), np.linalg.norm(load))


def resample_periodic(states: np.ndarray, side: int, ndim: int) -> np.ndarray:
    """Fourier interpolation of periodic fields to ``side`` points along each of the last ``ndim`` axes
    (exact for fields band-limited below both grids' Nyquist modes)."""
    out = np.asarray(states, dtype=np.float64)
    for axis in range(out.ndim - ndim, out.ndim):
        if out.shape[axis] != side:
            out = signal.resample(out, side, axis=axis)
    return out


def coarse_side(side: int) -> int:
    """The grid side of the two-solution estimator's coarse solve for an answer on ``side`` points."""
    return min(side, max(MIN_COARSE_SIDE, side // 2))


def two_solution(proposed: np.ndarray, coarse: np.ndarray, ndim: int) -> float:
    """``||proposed - coarse|| / ||coarse||`` with ``coarse`` Fourier-interpolated to ``proposed``'s grid."""
    proposed = np.asarray(proposed, dtype=np.float64)
    coarse = resample_periodic(coarse, proposed.shape[-1], ndim)
    return _ratio(np.linalg.norm(proposed - coarse), np.linalg.norm(coarse))


def _largest_stable(interval: float, stable) -> float:
    """The largest ``interval / 2^j`` for which ``stable(step)`` holds (halving ends: small steps are
    stable for both schemes)."""
    step = interval
    while not stable(step):
        step /= 2.0
    return step


def burgers_advance(
    params: burgers.BurgersParameters, u: np.ndarray, offsets: np.ndarray, time_step: float | None = None
) -> np.ndarray:
    """Burgers states ``(len(offsets), n)`` a time ``offsets`` after the state ``u`` (shape ``(n,)``), on
    ``u``'s grid.

    Parameters
    ----------
    params : BurgersParameters
        Viscosity and the dataset's time step (``time_step`` unset: its default, stable at the solve
        resolution and so on any coarser grid).
    u : ndarray, shape (n,)
        The starting state.
    offsets : ndarray, shape (T,)
        Non-decreasing times after the starting state.
    time_step : float, optional
        Largest step instead of the dataset's.
    """
    params = params.on_grid(len(u))
    step = time_step or params.time_step or params.default_time_step()
    return burgers.solve_burgers(np.asarray(u, dtype=np.float64)[None], params.viscosity, step, offsets)[0]


def burgers_coarse(
    params: burgers.BurgersParameters, u: np.ndarray, offsets: np.ndarray, side: int | None = None
) -> np.ndarray:
    """The two-solution estimator's coarse Burgers solve from ``u`` (on ``side`` points, by default
    :func:`coarse_side`, with the largest stable step there, a power-of-two fraction of the first
    interval)."""
    side = side or coarse_side(len(u))
    coarse = replace(params, solve_resolution=side, record_every=None, final_time=float(offsets[0]))
    step = _largest_stable(float(offsets[0]), lambda dt: coarse.stability_factor(dt) <= 1.0)
    return burgers_advance(params, resample_periodic(u, side, 1), offsets, step)


def navier_stokes_advance(
    params: navier_stokes.NavierStokesParameters,
    w: np.ndarray,
    offsets: np.ndarray,
    time_step: float | None = None,
) -> np.ndarray:
    """Vorticities ``(len(offsets), n, n)`` a time ``offsets`` after ``w`` (shape ``(n, n)``), on ``w``'s
    grid, with the dataset's time step (the largest stable there where it is not) or ``time_step``."""
    import torch

    n = w.shape[-1]
    if time_step is None:
        time_step = params.on_grid(n).time_step
    states = navier_stokes.solve_navier_stokes(
        torch.as_tensor(np.asarray(w, dtype=np.float64)[None]),
        torch.as_tensor(navier_stokes.forcing_field(n, params.forcing_amplitude)),
        params.viscosity,
        time_step,
        offsets,
    )
    return states[0].numpy()


def navier_stokes_coarse(
    params: navier_stokes.NavierStokesParameters, w: np.ndarray, offsets: np.ndarray, side: int | None = None
) -> np.ndarray:
    """The two-solution estimator's coarse Navier-Stokes solve from ``w`` (on ``side`` points per side,
    by default :func:`coarse_side`, with the largest stable step there, a power-of-two fraction of the
    first interval)."""
    side = side or coarse_side(w.shape[-1])
    interval = float(offsets[0])
    step = _largest_stable(interval, lambda dt: params.stability_factor(side, dt) <= 1.0)
    return navier_stokes_advance(params, resample_periodic(w, side, 2), offsets, step)
