import numpy as np
import pytest

from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.random_fields import NeumannGaussianField


def test_dct_evaluation_equals_the_explicit_karhunen_loeve_sum():
    grid, field = UnitSquareGrid(9), NeumannGaussianField(alpha=2.0, tau=3.0)
    g = field.sample(grid, np.random.default_rng(7))
    xi = np.random.default_rng(7).standard_normal((9, 9))
    x = grid.coordinates
    k = np.arange(9)
    basis = np.where(k[:, None] == 0, 1.0, np.sqrt(2.0)) * np.cos(np.pi * k[:, None] * x[None, :])  # (k, x)
    explicit = np.einsum("kl,ki,lj->ij", field.sqrt_eigenvalues(9) * xi, basis, basis)
    np.testing.assert_allclose(g, explicit, atol=1e-12)


def test_field_has_zero_mean_mode_and_the_claimed_pointwise_variance():
    grid, field = UnitSquareGrid(33), NeumannGaussianField()
    rng = np.random.default_rng(0)
    samples = np.stack([field.sample(grid, rng) for _ in range(400)])
    # The mean mode is removed: each sample integrates to ~0 (trapezoid rule).
    assert np.abs(np.trapezoid(np.trapezoid(samples, dx=grid.h, axis=2), dx=grid.h, axis=1)).max() < 1e-12
    # Pointwise variance at the centre: sum_k lambda_k phi_k(1/2, 1/2)^2.
    k = np.arange(33)
    phi = np.where(k == 0, 1.0, np.sqrt(2.0)) * np.cos(np.pi * k * 0.5)
    expected = np.sum(field.sqrt_eigenvalues(33) ** 2 * np.outer(phi, phi) ** 2)
    assert samples[:, 16, 16].var() == pytest.approx(expected, rel=0.2)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        NeumannGaussianField(alpha=1.0)
    with pytest.raises(ValueError, match="tau"):
        NeumannGaussianField(tau=0.0)
