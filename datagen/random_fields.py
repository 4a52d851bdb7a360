"""Gaussian random fields sampled by their Karhunen-Loeve expansion.

The FNO benchmarks draw inputs from ``N(0, sigma^2 (-Laplacian + tau^2 I)^(-alpha))``. With zero-Neumann
boundary conditions on [0, 1]^2 the eigenfunctions of the Laplacian are cosines,
``phi_k(x, y) = c_k1 c_k2 cos(pi k1 x) cos(pi k2 y)`` (``c_0 = 1``, ``c_k = sqrt 2``), with eigenvalues
``pi^2 |k|^2``; the field is ``g = sum_k sqrt(lambda_k) xi_k phi_k`` with ``xi_k ~ N(0, 1)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import fft

from pdeserve.datagen.grids import UnitSquareGrid


@dataclass(frozen=True)
class NeumannGaussianField:
    """``N(0, tau^(2 alpha - 2) (-Laplacian + tau^2 I)^(-alpha))`` on the unit square, zero-Neumann.

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


@functools.cache
def _average_variance(alpha: float, tau: float) -> float:
    return float(np.sum(NeumannGaussianField(alpha, tau).sqrt_eigenvalues(512) ** 2))
