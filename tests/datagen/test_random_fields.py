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


def test_mode_variances_of_many_samples_match_the_covariance_spectrum():
    # Project samples back onto the cosine modes (inverse DCT-I) and compare each mode's sample variance
    # with lambda_k: the spectrum of the covariance operator, not only one point of it.
    from scipy import fft

    n, field = 17, NeumannGaussianField(alpha=2.0, tau=3.0)
    rng = np.random.default_rng(1)
    samples = np.stack([field.sample(UnitSquareGrid(n), rng) for _ in range(2000)])
    coefficients = fft.idctn(samples, type=1, axes=(1, 2))
    # Undo the sampler's scaling: interior modes were halved and carry the sqrt(2) normalisation per axis.
    scale = np.where(np.arange(n) == 0, 1.0, np.sqrt(2.0))
    scale[1:-1] *= 0.5
    variances = (coefficients / np.outer(scale, scale)).var(axis=0)
    expected = field.sqrt_eigenvalues(n) ** 2
    low = np.add.outer(np.arange(n), np.arange(n)) <= 6  # the modes that carry the energy
    low[0, 0] = False
    np.testing.assert_allclose(variances[low], expected[low], rtol=0.15)
    assert variances[0, 0] < 1e-20
    # Domain-averaged variance: sum_k lambda_k, independent of the grid.
    assert samples.var(axis=0).mean() == pytest.approx(field.average_variance(), rel=0.1)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        NeumannGaussianField(alpha=1.0)
    with pytest.raises(ValueError, match="tau"):
        NeumannGaussianField(tau=0.0)
