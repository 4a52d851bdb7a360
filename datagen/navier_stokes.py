"""2D incompressible Navier-Stokes in vorticity form on the unit torus, the FNO benchmark.

``w_t + u . grad w = nu Lap w + f`` on [0, 1)^2 with periodic boundaries, ``u = (psi_y, -psi_x)`` and
``-Lap psi = w``. Nodes sit at ``x_i = i / n``, ``i = 0 .. n - 1``; arrays are indexed
``[i, j] = (x_i, y_j)``. Benchmark distribution (Li et al. 2021, FNO):
``f = 0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y)))``, ``w0`` from ``TorusGaussianField(alpha=2.5, tau=7)``
(see it for the scaling), ``nu = 1e-3`` (also ``1e-4`` and ``1e-5``), ``dt = 1e-4``, ``w`` stored at
``t = 1, 2, ..., 50``, solved at 256 x 256 and subsampled to 64 x 64.

Scheme: Fourier pseudo-spectral in space. Dealiasing by the isotropic 2/3 rule: only the modes with
``|k| < n / 3`` enter the nonlinear term, and its product is truncated back to them, so no aliased mode ever
feeds back (products have ``|k_x|, |k_y| <= |k| < 2 n / 3``, whose aliases land at ``|k_x|`` or
``|k_y| > n / 3``). The other modes are passive: they only decay by the viscous factor and take the forcing.
The advection is evaluated in Basdevant's (1983) form ``u . grad w = (d_xx - d_yy)(u v) + d_xy (v^2 - u^2)``,
equal for divergence-free ``u`` and cheaper: the work of four real FFTs per evaluation, done as two complex
ones, ``z = u + i v`` back and ``z^2 = u^2 - v^2 + 2 i u v`` forth (see ``solve_navier_stokes``). In time, the
viscous term is Crank-Nicolson and the advection and forcing ``N(w) = -u . grad w + f`` are the second-order
Adams-Bashforth extrapolation (CN/AB2, "CNAB2"), per step ``h``, mode by mode::

    w+ = B (A w + h (3/2 N(w) - 1/2 N(w-))),    A, B = 1 -+ h nu kappa^2 / 2, 1 / B

second order in time with one evaluation of ``N`` per step, where Heun's predictor-corrector (the scheme the
FNO JMLR paper describes; their code takes explicit Euler steps) needs two. The first step, which has no
``N(w-)``, is one Crank-Nicolson/Heun step (``w* = B (A w + h N(w))``,
``w+ = B (A w + h / 2 (N(w) + N(w*)))``); where the step size changes from ``h-`` to ``h`` (stored times that
are not equally spaced) the extrapolation becomes ``(1 + r / 2) N(w) - (r / 2) N(w-)``, ``r = h / h-``, still
second order. Each interval between stored times is cut into equal steps of at most ``time_step``, so every
stored time is hit exactly. The solver is torch, batched over samples, on the GPU when there is one; torch is
imported lazily so that importing this module (the CLI) stays fast. Its time loop only touches the modes
``|k_x|, |k_y| < n / 3``; the (passive) modes outside are advanced in closed form,
``w(t + N h) = a^N w + (1 - a^N) f / (nu kappa^2)`` with ``a = B A`` the Crank-Nicolson factor: the same
recursion, summed.

Stability: the explicit term is linearised about a frozen velocity ``c``, which turns each mode into
``v' = -nu kappa^2 v - i (c . kappa) v``. With ``y = nu kappa^2 h`` and ``s = (c . kappa) h`` the CN/AB2
step is the two-step recursion ``(1 + y / 2) v+ = (1 - y / 2) v - i s (3 v - v-) / 2``, whose solutions
are ``rho^j`` for the roots ``rho`` of ``(1 + y / 2) rho^2 - (1 - y / 2 - 3 i s / 2) rho - i s / 2``
(``cnab2_amplification`` returns the larger ``|rho|``): the step is stable when both lie in the unit
disc. AB2 alone is weakly unstable for pure advection: at ``y = 0`` the principal root has
``|rho| = 1 + s^4 / 4 + O(s^6)`` (Heun's factor is ``1 + s^4 / 8``), and the viscous term pulls it in by
about ``y``, so a step is stable about where ``s^4 / 4 <= y``, i.e. ``U^4 kappa_max^2 h^3 <= 4 nu``
(Heun: ``8 nu``; the stable step is ``2^(-1/3)``, 0.79 times Heun's). For stiff modes (``y >> 1``)
Crank-Nicolson's factor tends to ``-1`` and the root near it needs about ``s^2 <= y / 3``;
irrelevant for the benchmark (``y <= 0.03``), and covered by the same root test. ``for_resolution``
refuses a step with ``|rho| > 1`` for any kept mode and ``|c . kappa| <= U |kappa|``. A single Heun step
(start-up) or variable step cannot grow without bound and is not checked. ``U`` bounds ``max |u|`` up to
the final time ``T``: the vorticity obeys the maximum principle of forced advection-diffusion,
``max |w(t)| <= max |w0| + t max |f|``, and the Biot-Savart law on the torus gives
``max |u| <= ||K||_1 max |w|`` with ``||K||_1 = 0.3875 <= 0.39`` (``BIOT_SAVART_L1``); ``max |w0|`` is
taken as ``SPEED_BOUND_STDS`` (8) pointwise standard deviations of ``w0``, exceeded by a benchmark field
with probability about ``1e-12`` (Rice formula). For the benchmark ``U = 0.39 (8 * 0.262 + T * 0.1414)``:
3.58, 2.47 and 1.92 at ``T = 50, 30, 20``, the benchmark's final times for ``nu = 1e-3, 1e-4, 1e-5``.
``dt = 1e-4`` passes for each of them at 64 and at 256 (at 256 ``nu = 1e-3, 1e-4, 1e-5`` allow
``U <= 9.8, 5.9, 3.40``; at 64, 21, 12 and 6.9; FNO's square 2/3 mask, whose corners reach ``sqrt 2``
further, would allow only 2.85 at ``nu = 1e-5``). ``nu = 1e-5`` run to ``T = 50`` at 256 needs
``dt <= 9.3e-5`` (Heun allowed ``U <= 4.08`` there). Sampled flows stay well below the bound: at
64 x 64, ``max |u|`` reached 0.26, 0.52 and 0.45 at ``nu = 1e-3, 1e-4, 1e-5`` by ``T = 50, 30, 20``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from pdeserve.datagen.errors import SolverRefusal
from pdeserve.datagen.grids import (
    check_time_grid,
    covering_steps,
    periodic_coordinates,
    rfft2_wavenumbers,
    time_grid,
)
from pdeserve.datagen.random_fields import TorusGaussianField

if TYPE_CHECKING:
    import torch

# max |w0| is bounded by this many pointwise standard deviations of the initial field.
SPEED_BOUND_STDS = 8.0
# L1 norm of the Biot-Savart kernel K = grad-perp of the mean-free Green's function of -Lap on the unit
# torus (u = K * w), rounded up: its Fourier truncations at 512, 1024 and 2048 points give 0.38667, 0.38707
# and 0.38726, converging at first order to 0.3875.
BIOT_SAVART_L1 = 0.39
# Speeds checked per unit of the speed bound (the amplification factor is smooth in the speed).
_SPEEDS_PER_BOUND = 32


def dealias_mask(n: int) -> np.ndarray:
    """The modes the isotropic 2/3 rule keeps, ``|k| < n / 3``: bool, ``rfft2`` layout ``(n, n // 2 + 1)``."""
    kx, ky = rfft2_wavenumbers(n)
    return 9.0 * (kx**2 + ky**2) < n * n


def forcing_field(n: int, amplitude: float = 0.1) -> np.ndarray:
    """The forcing ``amplitude (sin(2 pi (x + y)) + cos(2 pi (x + y)))`` at the nodes, shape ``(n, n)``."""
    x = periodic_coordinates(n)
    phase = 2.0 * np.pi * (x[:, None] + x[None, :])
    return amplitude * (np.sin(phase) + np.cos(phase))


def cnab2_amplification(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Largest ``|rho|`` of CN/AB2's modes ``v_j = rho^j`` for ``v' = -nu kappa^2 v - i (c . kappa) v``.

    ``y = nu kappa^2 h >= 0`` (Crank-Nicolson) and ``s = (c . kappa) h`` (second-order Adams-Bashforth);
    they broadcast. The step ``(1 + y / 2) v+ = (1 - y / 2) v - i s (3 v - v-) / 2`` has the characteristic
    polynomial ``(1 + y / 2) rho^2 - (1 - y / 2 - 3 i s / 2) rho - i s / 2``; its roots are
    ``(1 - y / 2) / (1 + y / 2)`` and ``0`` at ``s = 0``, and at ``y = 0`` the principal one has
    ``|rho| = 1 + s^4 / 4 + O(s^6)``. A two-step scheme is stable when both roots lie in the unit disc.
    """
    y, s = np.broadcast_arrays(np.asarray(y, dtype=np.float64), np.asarray(s, dtype=np.float64))
    a = 1.0 + 0.5 * y
    b = -(1.0 - 0.5 * y - 1.5j * s)
    c = -0.5j * s
    root = np.sqrt(b * b - 4.0 * a * c)
    # Citardauq form: add the square root aligned with b, so q suffers no cancellation; the roots are q / a
    # and c / q (q = 0 only where b and the discriminant vanish, i.e. y = 2, s = 0: both roots are 0).
    root = np.where((np.conj(b) * root).real >= 0.0, root, -root)
    q = -0.5 * (b + root)
    other = np.divide(c, q, out=np.zeros_like(q), where=q != 0)
    return np.maximum(np.abs(q / a), np.abs(other))


def stability_factor(viscosity: float, step: float, n: int, max_speed: float) -> float:
    """Largest ``|rho|`` of the frozen-velocity linearisation over kept modes and speeds up to ``max_speed``.

    Every distinct ``|kappa| = 2 pi |k|`` of ``dealias_mask(n)`` is checked with ``c . kappa`` running over
    ``max_speed |kappa| j / 32``, ``j = 0 .. 32`` (``|rho|`` is even in it: ``s -> -s`` conjugates the
    polynomial). The step is stable when ``<= 1``.
    """
    kx, ky = rfft2_wavenumbers(n)
    k2 = np.unique((kx**2 + ky**2)[dealias_mask(n)])
    kappa = 2.0 * np.pi * np.sqrt(k2[k2 > 0])
    if kappa.size == 0:
        return 1.0
    y = (viscosity * kappa**2 * step)[:, None]
    s = (step * max_speed * kappa)[:, None] * (np.arange(_SPEEDS_PER_BOUND + 1) / _SPEEDS_PER_BOUND)[None, :]
    return float(cnab2_amplification(y, s).max())


@dataclass(frozen=True)
class _StepCoefficients:
    """Multipliers of one step size ``h`` on the block of active modes ``|k_x|, |k_y| <= K``.

    The real tensors have shape ``(..., 2K + 1, 2K + 1, 2)``: each mode's value repeated for its real and
    imaginary parts, to multiply ``torch.view_as_real`` of the spectra (faster on the CPU than complex
    arithmetic with real-valued complex multipliers).
    """

    decay: torch.Tensor  # real: Crank-Nicolson's a = (1 - y / 2) / (1 + y / 2), y = nu kappa^2 h
    forcing: torch.Tensor  # real: b f_hat, b = h / (1 + y / 2), the forcing's share of a step
    advection: torch.Tensor  # complex: 3/2 b times the Basdevant multiplier of z^2 (see evaluate)
    gain: np.ndarray  # b (float64), for a change of step size
    passive_decay: np.ndarray  # a on the whole rfft2 spectrum (float64), for the passive modes


def solve_navier_stokes(
    w0: torch.Tensor,
    forcing: torch.Tensor | np.ndarray,
    viscosity: float,
    dt: float,
    times: Sequence[float],
    *,
    stride: int = 1,
) -> torch.Tensor:
    """Solve the vorticity equation on the unit torus for a batch of initial vorticities.

    Parameters
    ----------
    w0 : torch.Tensor, shape (batch, n, n)
        Initial vorticities at the nodes ``(i / n, j / n)``, float32 or float64, on any device; the
        computation runs there, in that precision. A nonzero mean is kept unchanged (it has no velocity).
    forcing : torch.Tensor or ndarray, shape (n, n) or (batch, n, n)
        Time-independent forcing ``f`` at the nodes. Its mean is ignored: on the torus the vorticity of a
        periodic velocity has zero mean, so no forcing can change it.
    viscosity : float
        ``nu > 0``.
    dt : float
        Largest time step. Each interval between consecutive ``times`` (and from 0 to the first) is cut
        into the fewest equal steps of at most ``dt``, so every time is hit exactly. Stability is not
        checked here (see ``NavierStokesParameters.for_resolution``).
    times : sequence of float
        Non-decreasing times ``>= 0`` at which to return the solution.
    stride : int
        Return every ``stride``-th node per axis (``n`` must be a multiple): subsampling to the output grid
        here keeps only the output resolution's history in memory.

    Returns
    -------
    torch.Tensor, shape (batch, len(times), n // stride, n // stride), on ``w0``'s device and dtype.
    """
    import torch

    times = np.asarray(times, dtype=np.float64)
    if w0.ndim != 3 or w0.shape[-1] != w0.shape[-2]:
        raise SolverRefusal(f"w0 must have shape (batch, n, n), got {tuple(w0.shape)}")
    if w0.dtype not in (torch.float32, torch.float64):
        raise SolverRefusal(f"w0 must be float32 or float64, got {w0.dtype}")
    if times.ndim != 1 or times.size == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty, non-decreasing sequence of times >= 0")
    if not (viscosity > 0 and dt > 0):
        raise ValueError(f"viscosity and dt must be positive, got {viscosity} and {dt}")
    batch, n = w0.shape[0], w0.shape[-1]
    if stride < 1 or n % stride:
        raise ValueError(f"stride {stride} does not divide the grid size {n}")
    device, real = w0.device, w0.dtype
    complex_dtype = torch.complex128 if real == torch.float64 else torch.complex64

    def as_complex(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=complex_dtype, device=device)

    def paired(array: np.ndarray) -> torch.Tensor:
        # A real per-mode multiplier for view_as_real spectra: contiguous, so the product vectorises.
        return torch.as_tensor(np.repeat(np.asarray(array)[..., None], 2, axis=-1), dtype=real, device=device)

    # The nonlinear term reads and writes only the kept modes, |k| < n / 3, all inside the block
    # |k_x|, |k_y| <= K: the time loop works on that block, (2K + 1)^2 modes per sample stored in increasing
    # order of (k_x, k_y) with both halves of the Hermitian spectrum, so that k -> -k is a flip. The modes
    # outside the block are passive: they only decay and take the forcing, a linear recursion summed in
    # closed form at the stored times.
    big_k = (n + 2) // 3 - 1
    size = 2 * big_k + 1
    block = np.arange(-big_k, big_k + 1)
    rows = torch.as_tensor(block % n, device=device)  # the block's k_x in the FFT layout
    kx, ky = block[:, None].astype(np.float64), block[None, :].astype(np.float64)
    kappa2 = 4.0 * np.pi**2 * (kx**2 + ky**2)
    keep = (9.0 * (kx**2 + ky**2) < n * n).astype(np.float64)  # dealias_mask, in block order

    def hermitian_block(spectrum: torch.Tensor) -> torch.Tensor:
        # The block of an rfft2 spectrum (..., n, n // 2 + 1), made exactly Hermitian (its k_y < 0 half by
        # w_hat(-k) = conj w_hat(k), its k_y = 0 column averaged with its mirror image): every step keeps that
        # exactly, so z = ifft2(z_hat) is u + i v of one real field, with no imaginary part creeping in.
        out = torch.empty((*spectrum.shape[:-2], size, size), dtype=complex_dtype, device=device)
        out[..., big_k:] = spectrum.index_select(-2, rows)[..., : big_k + 1]
        column = out[..., big_k].clone()
        out[..., big_k] = 0.5 * (column + column.flip(-1).conj())
        out[..., :big_k] = out[..., big_k + 1 :].flip(-2, -1).conj()
        return out

    # z = u + i v, u = psi_y, v = -psi_x, psi = w / kappa^2 on the kept modes (the mean mode carries no
    # velocity): z_hat = 2 pi (k_x + i k_y) w_hat / kappa^2. The inverse FFT runs unnormalised
    # (norm="forward"), so its 1 / n^2 is folded in here instead of costing a pass over z.
    inverse_laplacian = np.divide(keep, kappa2, out=np.zeros_like(kappa2), where=kappa2 > 0) / n**2
    velocity = as_complex(2.0 * np.pi * (kx + 1j * ky) * inverse_laplacian)
    # -u . grad w = -(d_xx - d_yy)(u v) - d_xy (v^2 - u^2) for divergence-free u (Basdevant 1983), and
    # z^2 = (u^2 - v^2) + 2 i u v holds both products: with c1, c2 the two multipliers below and
    # Y = fft2(z^2) = 2 i P - Q (P, Q the spectra of u v and v^2 - u^2), -u . grad w has the spectrum
    # c1 P + c2 Q = H(k) + conj(H(-k)), H = alpha Y, alpha = -i c1 / 4 - c2 / 2. So an evaluation costs one
    # inverse and one forward complex FFT, the work of four real ones, with no copies inside (torch's irfft2
    # transposes twice) and one flip.
    minus_dxx_dyy = 4.0 * np.pi**2 * (kx**2 - ky**2) * keep
    minus_dxy = 4.0 * np.pi**2 * kx * ky * keep
    basdevant = -0.25j * minus_dxx_dyy - 0.5 * minus_dxy
    forcing = torch.as_tensor(forcing, dtype=real, device=device)
    if forcing.shape[-2:] != (n, n):
        raise ValueError(
            f"forcing must have shape ({n}, {n}) or (batch, {n}, {n}), got {tuple(forcing.shape)}"
        )
    forcing_hat = torch.fft.rfft2(forcing).clone()
    forcing_hat[..., 0, 0] = 0.0  # the mean of w is conserved
    forcing_block = hermitian_block(forcing_hat)
    # Passive modes: w(t + N h) = a^N w(t) + (1 - a^N) f / (nu kappa^2), the N-fold Crank-Nicolson step
    # (b / (1 - a) = 1 / (nu kappa^2)), applied to the whole rfft2 spectrum; the block is overwritten.
    kx_all, ky_all = rfft2_wavenumbers(n)
    kappa2_all = 4.0 * np.pi**2 * (kx_all**2 + ky_all**2)
    viscous = viscosity * kappa2_all
    passive_equilibrium = forcing_hat * as_complex(
        np.divide(1.0, viscous, out=np.zeros_like(viscous), where=viscous > 0)
    )
    # conj(H(-k)) in the real view: the flipped block times (1, -1).
    conjugate = paired(np.ones((size, size))) * torch.tensor([1.0, -1.0], dtype=real, device=device)

    coefficients: dict[float, _StepCoefficients] = {}

    def coefficients_for(h: float) -> _StepCoefficients:
        if h not in coefficients:
            y = viscosity * kappa2 * h
            implicit = 1.0 / (1.0 + 0.5 * y)
            y_all = viscous * h
            coefficients[h] = _StepCoefficients(
                decay=paired(implicit * (1.0 - 0.5 * y)),
                forcing=torch.view_as_real(forcing_block * as_complex(h * implicit)).contiguous(),
                advection=as_complex(1.5 * h * implicit * basdevant),
                gain=h * implicit,
                passive_decay=(1.0 - 0.5 * y_all) / (1.0 + 0.5 * y_all),
            )
        return coefficients[h]

    # Work buffers, allocated once: the loop then allocates only the FFTs' outputs and the flip. z_hat holds
    # the block at [0, 2K] x [0, 2K], all else stays 0: the shift by K multiplies z by exp(2 pi i K (x + y)),
    # so z^2 by exp(2 pi i 2K (x + y)), and fft2(z^2) holds Y(k) at k + 2K: the block is [K, 3K] x [K, 3K]
    # (3K < n, so the 2/3 rule's argument is unchanged: no product mode aliases into the block).
    z_hat = torch.zeros((batch, n, n), dtype=complex_dtype, device=device)
    z_block = z_hat[:, :size, :size]
    products_block = (slice(None), slice(big_k, big_k + size), slice(big_k, big_k + size))

    def evaluate(w: torch.Tensor, g_r: torch.Tensor, step: _StepCoefficients) -> None:
        # g <- 3/2 b (-u . grad w) on the block, the AB2 share of the newest evaluation. The products of the
        # truncated velocities are exact on the kept modes (2/3 rule).
        torch.mul(w, velocity, out=z_block)
        z = torch.fft.ifft2(z_hat, norm="forward")
        h_hat = torch.mul(torch.fft.fft2(z.mul_(z))[products_block], step.advection)
        torch.addcmul(torch.view_as_real(h_hat), conjugate, torch.view_as_real(h_hat.flip(-2, -1)), out=g_r)

    def new_block() -> tuple[torch.Tensor, torch.Tensor]:
        spectrum = torch.empty((batch, size, size), dtype=complex_dtype, device=device)
        return spectrum, torch.view_as_real(spectrum)

    w_hat = torch.fft.rfft2(w0)
    w = hermitian_block(w_hat)
    w_r = torch.view_as_real(w)
    passive = w_hat
    (w_next, w_next_r), (_, g_r), (_, g_old_r) = new_block(), new_block(), new_block()
    positive, negative = slice(big_k, None), slice(None, big_k)  # the block's k_x >= 0 and k_x < 0 rows
    out = torch.empty((batch, times.size, n // stride, n // stride), dtype=real, device=device)
    t, h_old = 0.0, None
    for j, t_next in enumerate(times):
        interval = float(t_next) - t
        if interval > 0:
            steps = covering_steps(interval, dt)
            h = interval / steps
            step = coefficients_for(h)
            taken = 0
            if h_old is None:
                # Start-up: one Crank-Nicolson/Heun step (second order), which leaves g(w0) in g_old.
                evaluate(w, g_old_r, step)
                torch.addcmul(g_old_r * (2.0 / 3.0), step.decay, w_r, out=w_next_r).add_(step.forcing)
                evaluate(w_next, g_r, step)  # at w* = a w + b N(w0) (forcing included)
                torch.addcmul((g_old_r + g_r) / 3.0, step.decay, w_r, out=w_next_r).add_(step.forcing)
                w, w_r, w_next, w_next_r = w_next, w_next_r, w, w_r
                taken = 1
            elif h != h_old:
                # A new step size: AB2 with variable steps extrapolates N to the middle of the new step,
                # (1 + r / 2) N - (r / 2) N_old, r = h / h_old, where g_old is 3/2 b_old (-u . grad w)_old.
                r = h / h_old
                evaluate(w, g_r, step)
                old_weight = paired(-(r / 3.0) * step.gain / coefficients[h_old].gain)
                torch.addcmul(g_r * ((2.0 + r) / 3.0), step.decay, w_r, out=w_next_r)
                w_next_r.addcmul_(old_weight, g_old_r).add_(step.forcing)
                w, w_r, w_next, w_next_r = w_next, w_next_r, w, w_r
                g_r, g_old_r = g_old_r, g_r
                taken = 1
            for _ in range(taken, steps):
                # Crank-Nicolson/AB2 (N includes f): a w + b (3/2 N - 1/2 N_old) = a w + g - g_old / 3 + b f.
                evaluate(w, g_r, step)
                torch.addcmul(g_r, step.decay, w_r, out=w_next_r).add_(g_old_r, alpha=-1.0 / 3.0)
                w_next_r.add_(step.forcing)
                w, w_r, w_next, w_next_r = w_next, w_next_r, w, w_r
                g_r, g_old_r = g_old_r, g_r
            decay = step.passive_decay**steps
            passive = torch.addcmul(passive_equilibrium * as_complex(1.0 - decay), as_complex(decay), passive)
            t, h_old = float(t_next), h
        if t_next == 0:
            out[:, j] = w0[:, ::stride, ::stride]  # exactly, without an FFT round trip
        else:
            spectrum = passive.clone()
            spectrum[:, : big_k + 1, : big_k + 1] = w[:, positive, big_k:]
            spectrum[:, n - big_k :, : big_k + 1] = w[:, negative, big_k:]
            out[:, j] = torch.fft.irfft2(spectrum, s=(n, n))[:, ::stride, ::stride]
    return out


@dataclass(frozen=True)
class NavierStokesParameters:
    """Everything that defines the Navier-Stokes dataset distribution (recorded in the HDF5 attributes).

    Parameters
    ----------
    viscosity : float
        ``nu`` in ``w_t + u . grad w = nu Lap w + f`` (1e-3 in the benchmark; also 1e-4 and 1e-5).
    time_step : float
        Largest solver step; each recording interval is cut into the fewest equal steps of at most this
        (1e-4 in the benchmark). ``for_resolution`` refuses a step that is unstable at the solve resolution.
    final_time : float
        Time of the last stored state (50 in the benchmark at ``nu = 1e-3``; 30 and 20 at 1e-4 and 1e-5).
    record_every : float
        Time between stored states ``w(record_every), w(2 record_every), ..., w(final_time)``;
        ``final_time`` must be a whole multiple of it.
    solve_resolution : int or None
        Nodes per side of the grid the solver runs on; stored fields are subsampled from it, so it must be
        a multiple of the output resolution (256 in the benchmark, stored at 64). ``None`` solves at the
        output resolution.
    forcing_amplitude : float
        ``a`` in the forcing ``a (sin(2 pi (x + y)) + cos(2 pi (x + y)))`` (0.1 in the benchmark).
    alpha, tau, sigma : float
        Parameters of the initial vorticity ``TorusGaussianField`` (2.5, 7, ``7^1.5``), in the FNO code's
        convention: covariance ``2 sigma^2 (-Lap + tau^2 I)^(-alpha)``, mean zero.
    """

    viscosity: float = 1e-3
    time_step: float = 1e-4
    final_time: float = 50.0
    record_every: float = 1.0
    solve_resolution: int | None = None
    forcing_amplitude: float = 0.1
    alpha: float = 2.5
    tau: float = 7.0
    sigma: float = 7.0**1.5

    def __post_init__(self) -> None:
        if not (self.viscosity > 0 and math.isfinite(self.viscosity)):
            raise ValueError(f"--viscosity must be positive, got {self.viscosity}")
        if not (self.time_step > 0 and math.isfinite(self.time_step)):
            raise ValueError(f"--time-step must be positive, got {self.time_step}")
        if self.record_every is None:
            raise ValueError("--record-every is required for navier-stokes")
        check_time_grid(self.final_time, self.record_every)
        if self.solve_resolution is not None and self.solve_resolution < 8:
            raise ValueError(f"--solve-resolution must be at least 8, got {self.solve_resolution}")
        if not math.isfinite(self.forcing_amplitude):
            raise ValueError(f"--forcing-amplitude must be finite, got {self.forcing_amplitude}")
        TorusGaussianField(self.alpha, self.tau, self.sigma)  # validates alpha, tau and sigma

    @property
    def field(self) -> TorusGaussianField:
        """The distribution of ``w0``."""
        return TorusGaussianField(self.alpha, self.tau, self.sigma)

    @property
    def step(self) -> float:
        """The step the solver takes: ``record_every`` cut into the fewest equal steps ``<= time_step``."""
        interval = self.final_time / len(record_times(self))
        return interval / covering_steps(interval, self.time_step)

    def speed_bound(self, n: int) -> float:
        """``U``, a bound on ``max |u|`` up to ``final_time`` on an ``n x n`` grid (module docstring)."""
        max_w0 = SPEED_BOUND_STDS * self.field.pointwise_std(n)
        max_forcing = math.sqrt(2.0) * abs(self.forcing_amplitude)
        return BIOT_SAVART_L1 * (max_w0 + self.final_time * max_forcing)

    def stability_factor(self, n: int, time_step: float | None = None) -> float:
        """``stability_factor`` of the step taken for ``time_step`` (default: this one) on ``n x n`` nodes."""
        params = self if time_step is None else replace(self, time_step=time_step)
        return stability_factor(self.viscosity, params.step, n, self.speed_bound(n))

    def max_stable_time_step(self, n: int) -> float:
        """About the largest stable ``time_step <=`` this one on an ``n x n`` grid, two significant digits.

        A suggestion for error messages: halves the step until it is stable, bisects between that and the
        unstable double, and rounds down.
        """
        stable = self.time_step
        # As the step shrinks the roots tend to the Crank-Nicolson factor and 0 (the advective growth
        # s^4 / 4 ~ h^4 loses to the damping y ~ h), so the halving ends.
        while self.stability_factor(n, stable) > 1.0:
            stable /= 2.0
        if stable == self.time_step:
            return stable
        unstable = 2.0 * stable
        for _ in range(20):
            middle = 0.5 * (stable + unstable)
            if self.stability_factor(n, middle) > 1.0:
                unstable = middle
            else:
                stable = middle
        digits = 1 - math.floor(math.log10(stable))
        # Round down to two significant digits; round() only strips the binary noise of the product.
        return round(math.floor(stable * 10.0**digits) / 10.0**digits, digits)

    def with_stable_time_step(self, resolution: int) -> NavierStokesParameters:
        """These parameters with ``time_step`` lowered to ``max_stable_time_step`` at the solve grid of the
        output ``resolution`` where ``for_resolution`` would refuse it (unchanged where it is stable): a
        step stable on one grid can be unstable on a finer one, whose modes it advects faster."""
        solve = self.solve_resolution or resolution
        if self.stability_factor(solve) <= 1.0 + 1e-12:
            return self
        return replace(self, time_step=self.max_stable_time_step(solve))

    def on_grid(self, n: int) -> NavierStokesParameters:
        """These parameters, checked, for a solve on the grid of ``n`` points itself (``solve_resolution``
        ignored), with the step lowered to the largest stable there where it is not: a model's step may
        be chosen for a coarser grid."""
        return replace(self, solve_resolution=None).with_stable_time_step(n).for_resolution(n)

    def as_dict(self) -> dict:
        return asdict(self)

    def for_resolution(self, resolution: int) -> NavierStokesParameters:
        """These parameters checked against the output ``resolution``, with ``solve_resolution`` resolved.

        Refuses an output grid that is not a subsample of the solver grid and a time step for which the
        explicit advection is linearly unstable at the solve resolution (before any work is done).
        """
        if resolution < 2:
            raise SolverRefusal(f"--resolution must be at least 2, got {resolution}")
        solve = self.solve_resolution or resolution
        if solve % resolution:
            raise SolverRefusal(
                f"resolution {resolution} does not divide solve resolution {solve}: "
                "--solve-resolution must be a multiple of --resolution"
            )
        if solve < 8:
            raise SolverRefusal(
                f"the solve resolution must be at least 8, got {solve}: set --solve-resolution"
            )
        factor = self.stability_factor(solve)
        if factor > 1.0 + 1e-12:
            raise SolverRefusal(
                f"--time-step {self.time_step:g} is unstable at solve resolution {solve} and viscosity "
                f"{self.viscosity:g}: the explicit advection grows by a factor {factor:.6g} per step for "
                f"speeds up to {self.speed_bound(solve):.3g} (a bound on max |u| up to --final-time "
                f"{self.final_time:g}); use --time-step {self.max_stable_time_step(solve):.3g} or smaller"
            )
        return replace(self, solve_resolution=solve)


def record_times(params: NavierStokesParameters) -> np.ndarray:
    """Times of the stored states, shape ``(T,)``: ``record_every, 2 record_every, ..., final_time``."""
    return time_grid(params.final_time, params.record_every)


def navier_stokes_batch(
    params: NavierStokesParameters,
    resolution: int,
    rngs: Sequence[np.random.Generator],
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, np.ndarray]:
    """Draw one ``w0`` per generator, solve them together at the solve resolution and subsample.

    Returns ``{"w0": (B, resolution, resolution), "w": (B, T, resolution, resolution)}`` (float64) with
    ``B = len(rngs)`` and the times of ``record_times(params)``. Each ``w0`` is drawn with numpy from its own
    generator only, and every operation acts on samples separately, so a sample does not depend on its
    batch-mates. ``device``: a torch device (``None``: CUDA when available, else the CPU); ``dtype``: the
    solver's precision (``None``: float64; the stored ``w0`` is the float64 draw either way).
    """
    import torch

    if params.solve_resolution is None:
        params = params.for_resolution(resolution)
    n = params.solve_resolution
    stride = n // resolution
    times = record_times(params)
    if not rngs:
        return {
            "w0": np.zeros((0, resolution, resolution)),
            "w": np.zeros((0, times.size, resolution, resolution)),
        }
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float64 if dtype is None else dtype
    w0 = np.stack([params.field.sample(n, rng) for rng in rngs])
    w = solve_navier_stokes(
        torch.as_tensor(w0, dtype=dtype, device=device),
        torch.as_tensor(forcing_field(n, params.forcing_amplitude), dtype=dtype, device=device),
        params.viscosity,
        params.time_step,
        times,
        stride=stride,
    )
    w = w.cpu().numpy().astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise RuntimeError("the Navier-Stokes solution blew up: reduce --time-step")
    return {"w0": w0[:, ::stride, ::stride], "w": w}


def navier_stokes_sample(
    params: NavierStokesParameters, resolution: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One sample of ``navier_stokes_batch``: ``{"w0": (r, r), "w": (T, r, r)}``."""
    return {name: values[0] for name, values in navier_stokes_batch(params, resolution, [rng]).items()}


def navier_stokes_reference(
    params: NavierStokesParameters, w0: np.ndarray, device: str | None = None
) -> np.ndarray:
    """``w`` at ``record_times(params)`` for given initial vorticities, solved at their own resolution.

    ``w0`` has shape ``(r, r)`` or ``(B, r, r)``; returns ``(T, r, r)`` or ``(B, T, r, r)`` (float64), with
    the parameters :meth:`NavierStokesParameters.on_grid` gives for ``r``. For the server's
    on-demand check of a surrogate against the classical solution.
    """
    import torch

    w0 = np.asarray(w0, dtype=np.float64)
    if w0.ndim not in (2, 3) or w0.shape[-1] != w0.shape[-2]:
        raise SolverRefusal(f"w0 must have shape (r, r) or (batch, r, r), got {w0.shape}")
    n = w0.shape[-1]
    params = params.on_grid(n)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    w = solve_navier_stokes(
        torch.as_tensor(w0.reshape(-1, n, n), device=device),
        torch.as_tensor(forcing_field(n, params.forcing_amplitude), device=device),
        params.viscosity,
        params.time_step,
        record_times(params),
    )
    w = w.cpu().numpy()
    return w[0] if w0.ndim == 2 else w
