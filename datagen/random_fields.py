"""Gaussian random fields, the random inputs of every PDE family, sampled by their Karhunen-Loeve expansion.

Each field is ``N(0, C)`` with ``C`` a negative power of a shifted Laplacian,
``(-Laplacian + tau^2 I)^(-alpha)`` up to a constant, on the domain and with the boundary condition of the
family that draws from it:

- ``NeumannGaussianField``: the unit square, zero-Neumann (Darcy's coefficient, Helmholtz's wave speed,
  which may keep only the leading modes: ``sample_leading``, ``kl_mode_order``);
- ``PeriodicGaussianField``: the periodic unit interval (Burgers' initial state);
- ``TorusGaussianField``: the unit torus (Navier-Stokes' initial vorticity).

They share one API. A field is a frozen dataclass of its covariance parameters, validated on construction
(``ValueError`` naming the parameter), and ``sample(grid, rng)`` draws one realisation at the nodes of a
grid, from ``rng`` only: a ``UnitSquareGrid`` for the square, the point count ``n`` per side for the
periodic grids ``x_i = i / n``. Its size is ``pointwise_std(n)`` where it is the same at every node
(periodic fields), else ``average_variance()``; its spectrum is ``sqrt_eigenvalues`` (the KL coefficients)
and, for the periodic fields, ``mode_variances(n)`` (``E |FFT of a sample|^2``).

A realisation draws its standard normals from ``rng`` in a fixed order and combines them by a fixed sequence
of floating-point operations: the same seed gives the same bits, which the dataset fingerprints recorded in
published models rely on (``tests/datagen/test_random_fields.py`` pins samples).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import fft

from pdeserve.datagen.grids import UnitSquareGrid, rfft2_wavenumbers


@dataclass(frozen=True)
class NeumannGaussianField:
    """``N(0, tau^(2 alpha - 2) (-Laplacian + tau^2 I)^(-alpha))`` on the unit square, zero-Neumann.

    With zero-Neumann boundary conditions on [0, 1]^2 the eigenfunctions of the Laplacian are cosines,
    ``phi_k(x, y) = c_k1 c_k2 cos(pi k1 x) cos(pi k2 y)`` (``c_0 = 1``, ``c_k = sqrt 2``), with eigenvalues
    ``pi^2 |k|^2``; the field is ``g = sum_k sqrt(lambda_k) xi_k phi_k`` with ``xi_k ~ N(0, 1)``.

    This is the Darcy coefficient field of Li et al. (2021): with their scaling the KL coefficients are
    ``sqrt(lambda_k) = tau^(alpha - 1) (pi^2 |k|^2 + tau^2)^(-alpha / 2)`` and the mean mode is zeroed.

    Parameters
    ----------
    alpha : float
        Smoothness exponent (2 in the benchmark); larger is smoother.
    tau : float
        Inverse length scale (3 in the benchmark).
    """

    alpha: float = 2.0
    tau: float = 3.0

    def __post_init__(self) -> None:
        if self.alpha <= 1.0:
            raise ValueError(f"alpha must be > 1 for a field with finite variance in 2D, got {self.alpha}")
        if self.tau <= 0.0:
            raise ValueError(f"tau must be positive, got {self.tau}")

    def sqrt_eigenvalues(self, modes: int) -> np.ndarray:
        """KL coefficients ``sqrt(lambda_k)`` for ``k1, k2 < modes``, mean mode set to zero."""
        k = np.arange(modes)
        k2 = k[:, None] ** 2 + k[None, :] ** 2
        coef = self.tau ** (self.alpha - 1.0) * (np.pi**2 * k2 + self.tau**2) ** (-self.alpha / 2.0)
        coef[0, 0] = 0.0
        return coef

    def average_variance(self) -> float:
        """Domain average of the pointwise variance, ``sum_k lambda_k`` (the ``phi_k`` are orthonormal).

        Summed over 512 modes per axis, which gives the infinite sum to many digits, so it does not
        depend on the grid a realisation is drawn on.
        """
        return _average_variance(self.alpha, self.tau)

    def sample(self, grid: UnitSquareGrid, rng: np.random.Generator) -> np.ndarray:
        """One realisation at the grid's nodes, shape ``(n, n)``.

        Uses the first ``n`` modes per axis, evaluated exactly at the nodes by a type-I DCT, so the same
        expansion is seen at every resolution (only truncated differently).
        """
        n = grid.n
        normalisation = np.full(n, np.sqrt(2.0))
        normalisation[0] = 1.0
        weights = (
            self.sqrt_eigenvalues(n) * rng.standard_normal((n, n)) * np.outer(normalisation, normalisation)
        )
        # DCT-I computes x_0 + (-1)^k x_{N} + 2 sum_{interior} x_m cos(pi k m / N): halve the interior
        # coefficients so every mode enters once.
        weights[1:-1, :] *= 0.5
        weights[:, 1:-1] *= 0.5
        return fft.dctn(weights, type=1)

    def sample_leading(
        self, grid: UnitSquareGrid, rng: np.random.Generator, count: int, scale: float = 1.0
    ) -> np.ndarray:
        """One realisation of the expansion truncated to its ``count`` leading modes, shape ``(n, n)``.

        Parameters
        ----------
        grid : UnitSquareGrid
            Where to evaluate the expansion (exactly, at the nodes).
        rng : numpy.random.Generator
            Source of the ``count`` standard normal coefficients, drawn in ``kl_mode_order``.
        count : int
            Modes kept, lowest ``|k|`` first (``kl_mode_order``); at least 1.
        scale : float
            Factor on every KL coefficient: a field with another amplitude and the same draws.
        """
        modes = kl_mode_order(count)
        size = int(modes.max()) + 1
        weights = np.zeros((size, size))
        sqrt_lambda = scale * self.sqrt_eigenvalues(size)[modes[:, 0], modes[:, 1]]
        weights[modes[:, 0], modes[:, 1]] = sqrt_lambda * rng.standard_normal(len(modes))
        basis = _cosine_basis(grid.coordinates, size)
        return basis @ weights @ basis.T


def kl_mode_order(count: int) -> np.ndarray:
    """The ``count`` leading Karhunen-Loeve modes of a ``NeumannGaussianField``.

    Parameters
    ----------
    count : int
        Number of modes (100 in the Helmholtz benchmark).

    Returns
    -------
    ndarray of int, shape (count, 2)
        Mode indices ``(k1, k2) != (0, 0)``, ``k1, k2 >= 0``, sorted by ``k1^2 + k2^2`` (increasing, so
        by decreasing eigenvalue), ties by ``k1`` then ``k2``, the Helmholtz benchmark script's order.
    """
    if count < 0:
        raise ValueError(f"the number of modes must be non-negative, got {count}")
    # Every mode with |k|^2 <= 2 count lies in this square, and there are more than count of them.
    side = math.isqrt(2 * count) + 2
    k1, k2 = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    k1, k2 = k1.ravel()[1:], k2.ravel()[1:]  # drops (0, 0), the first entry
    order = np.lexsort((k2, k1, k1**2 + k2**2))
    return np.stack([k1[order], k2[order]], axis=1)[:count]


def _cosine_basis(x: np.ndarray, modes: int) -> np.ndarray:
    """``sqrt(2 - [k = 0]) cos(pi k x)`` for ``k < modes``, shape ``(len(x), modes)``."""
    norm = np.full(modes, math.sqrt(2.0))
    norm[0] = 1.0
    return norm * np.cos(np.pi * np.outer(x, np.arange(modes)))


@functools.cache
def _average_variance(alpha: float, tau: float) -> float:
    return float(np.sum(NeumannGaussianField(alpha, tau).sqrt_eigenvalues(512) ** 2))


@dataclass(frozen=True)
class PeriodicGaussianField:
    """``N(0, sigma^2 (-d^2/dx^2 + tau^2 I)^(-alpha))`` on the periodic unit interval, mean mode removed.

    Karhunen-Loeve expansion in the orthonormal eigenfunctions ``sqrt 2 cos(2 pi k x)`` and
    ``sqrt 2 sin(2 pi k x)`` of the periodic Laplacian (eigenvalue ``4 pi^2 k^2``), with coefficients
    ``sqrt(lambda_k) = sigma (4 pi^2 k^2 + tau^2)^(-alpha / 2)``. The constant mode ``k = 0`` is left out,
    as in the FNO authors' ``GRF1.m`` (it places the requested mean, 0 for Burgers, there): every
    ``u0`` then has zero mean, which Burgers conserves, and a nonzero mean would only shift the solution
    by a Galilean transformation. A field on ``n`` points uses the modes ``k = 1 .. n // 2`` (``GRF1``'s
    ``N = s / 2``), evaluated exactly at the nodes; at the Nyquist mode only the cosine is nonzero there.

    Parameters
    ----------
    sigma : float
        Amplitude (25 in the Burgers benchmark, covariance ``625 (...)^(-2)``).
    tau : float
        Inverse length scale (5 in the benchmark).
    alpha : float
        Smoothness exponent (2 in the benchmark); must exceed 1/2 for finite variance in 1D.
    """

    sigma: float = 25.0
    tau: float = 5.0
    alpha: float = 2.0

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"--sigma must be positive, got {self.sigma}")
        if not self.tau > 0:
            raise ValueError(f"--tau must be positive, got {self.tau}")
        if not self.alpha > 0.5:
            raise ValueError(
                f"--alpha must exceed 0.5 for a field with finite variance in 1D, got {self.alpha}"
            )

    def sqrt_eigenvalues(self, n: int) -> np.ndarray:
        """KL coefficients ``sqrt(lambda_k)`` for ``k = 0 .. n // 2``, the mean mode set to zero."""
        k = np.arange(n // 2 + 1)
        coef = self.sigma * (4.0 * np.pi**2 * k**2 + self.tau**2) ** (-self.alpha / 2.0)
        coef[0] = 0.0
        return coef

    def mode_variances(self, n: int) -> np.ndarray:
        """``E |rfft(u)_k|^2`` for ``k = 0 .. n // 2`` of a field on ``n`` points."""
        var = (n * self.sqrt_eigenvalues(n)) ** 2
        if n % 2 == 0:
            var[-1] *= 2.0  # sqrt 2 cos(pi n x_i) = sqrt 2 (-1)^i: a real mode with all the energy
        return var

    def pointwise_std(self, n: int) -> float:
        """Standard deviation of ``u(x)`` for a field on ``n`` points (the same at every node)."""
        # Each mode k >= 1 contributes 2 lambda_k (cos^2 + sin^2 = 1; at the Nyquist mode cos^2 = 1).
        return math.sqrt(2.0 * float(np.sum(self.sqrt_eigenvalues(n) ** 2)))

    def spectrum(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``rfft`` of one realisation on ``n`` points, shape ``(n // 2 + 1,)``."""
        xi = rng.standard_normal((2, n // 2))
        # sqrt 2 s_k (xi_c cos + xi_s sin) has rfft coefficient (n / sqrt 2) s_k (xi_c - i xi_s).
        coef = np.zeros(n // 2 + 1, dtype=np.complex128)
        coef[1:] = (n / math.sqrt(2.0)) * self.sqrt_eigenvalues(n)[1:] * (xi[0] - 1j * xi[1])
        if n % 2 == 0:
            coef[-1] = n * math.sqrt(2.0) * self.sqrt_eigenvalues(n)[-1] * xi[0, -1]
        return coef

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One realisation at the nodes ``x_i = i / n``, shape ``(n,)``."""
        return fft.irfft(self.spectrum(n, rng), n)


@dataclass(frozen=True)
class TorusGaussianField:
    """``N(0, 2 sigma^2 (-Lap + tau^2 I)^(-alpha))`` on the unit torus, mean mode removed.

    This is the FNO authors' ``GaussianRF`` as released with the benchmark (2020, torch <= 1.7 FFT API):
    Fourier coefficients ``n^2 sqrt(2) sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2) (xi + i eta)``
    with ``xi, eta ~ N(0, 1)`` for every ``k`` of the full ``n x n`` FFT grid (``k_x, k_y`` in
    ``-n/2 .. n/2 - 1``), the ``k = 0`` one zeroed, and the real part of the inverse FFT kept. That makes
    ``E |fft2(w)_k|^2 = 2 n^4 sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha)`` (``mode_variances``); their default
    ``sigma = tau^(alpha - 1)`` (``tau^((2 alpha - d) / 2)``, ``d = 2``) gives the benchmark's covariance
    ``2 * 7^3 (-Lap + 49 I)^(-2.5)``, pointwise standard deviation 0.262. (The paper writes
    ``7^(3/2) (-Lap + 49 I)^(-2.5)``; the later torch.fft port in neuraloperator draws unit-variance complex
    normals and has half the variance above.) Here each realisation is white noise filtered in Fourier
    space, ``irfft2(rfft2(xi) sqrt(mode_variances) / n)``: the same Gaussian law (every mode's coefficient
    circular with that variance and Hermitian-paired, real with that variance at the self-conjugate modes).

    Parameters
    ----------
    alpha : float
        Smoothness exponent (2.5 in the benchmark); must exceed 1 for finite variance in 2D.
    tau : float
        Inverse length scale (7 in the benchmark).
    sigma : float
        Amplitude in the FNO code's convention (``7^1.5``, about 18.52, in the benchmark).
    """

    alpha: float = 2.5
    tau: float = 7.0
    sigma: float = 7.0**1.5

    def __post_init__(self) -> None:
        if not (self.alpha > 1.0 and math.isfinite(self.alpha)):
            raise ValueError(
                f"--alpha must exceed 1 for a field with finite variance in 2D, got {self.alpha}"
            )
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise ValueError(f"--tau must be positive, got {self.tau}")
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"--sigma must be positive, got {self.sigma}")

    def _variances(self, k2: np.ndarray, n: int) -> np.ndarray:
        var = 2.0 * float(n) ** 4 * self.sigma**2 * (4.0 * np.pi**2 * k2 + self.tau**2) ** (-self.alpha)
        return np.where(k2 == 0, 0.0, var)

    def mode_variances(self, n: int) -> np.ndarray:
        """``E |rfft2(w)_k|^2`` on an ``n x n`` grid, shape ``(n, n // 2 + 1)``; zero at ``k = 0``."""
        kx, ky = rfft2_wavenumbers(n)
        return self._variances(kx**2 + ky**2, n)

    def pointwise_std(self, n: int) -> float:
        """Standard deviation of ``w(x)`` on an ``n x n`` grid (the same at every node)."""
        k = np.rint(fft.fftfreq(n, 1.0 / n))
        full = self._variances(k[:, None] ** 2 + k[None, :] ** 2, n)
        return math.sqrt(float(full.sum())) / n**2  # Parseval: var w = sum_k E |W_k|^2 / n^4

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One realisation at the nodes of the ``n x n`` grid, shape ``(n, n)``, from ``rng`` only."""
        # rfft2 of unit white noise has E |.|^2 = n^2 per mode, real at the self-conjugate modes.
        noise = fft.rfft2(rng.standard_normal((n, n)))
        return fft.irfft2(noise * (np.sqrt(self.mode_variances(n)) / n), s=(n, n))
