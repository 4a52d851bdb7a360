"""The FNO's spectral convolution is resolution invariant on odd grid sides as well as even ones."""

import numpy as np
import pytest
import torch
from neuralop.layers.spectral_convolution import SpectralConv

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.spectral import ResolutionInvariantSpectralConv


def band_limited(n: int) -> torch.Tensor:
    """Three periodic channels with frequencies up to 3 per side, sampled on an n x n grid."""
    x = np.arange(n) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    f = np.sin(2 * np.pi * X) + np.cos(6 * np.pi * Y) + 0.5 * np.sin(2 * np.pi * (2 * X + Y))
    return torch.tensor(np.stack([f, f**2, np.cos(2 * np.pi * (X - 2 * Y))]), dtype=torch.float32)[None]


def low_modes(y: torch.Tensor) -> torch.Tensor:
    n = y.shape[-1]
    return torch.fft.rfft2(y)[..., :6, :6] / n**2


@pytest.mark.parametrize("factorization", [None, "tucker"])
@torch.no_grad()
def test_matches_neuraloperator_on_even_sides_and_stays_invariant_on_odd_ones(factorization):
    torch.manual_seed(0)
    options = {"n_modes": (12, 12), "factorization": factorization, "rank": 0.5 if factorization else 1.0}
    upstream = SpectralConv(3, 2, **options)
    conv = ResolutionInvariantSpectralConv(3, 2, **options)
    conv.load_state_dict(upstream.state_dict())  # the same parameters: checkpoints load unchanged
    for n in (64, 96):
        assert torch.equal(conv(band_limited(n)), upstream(band_limited(n)))
    reference = low_modes(conv(band_limited(64)))
    for n in (33, 63, 65, 85, 127, 128):
        error = (low_modes(conv(band_limited(n))) - reference).abs().max() / reference.abs().max()
        assert error < 1e-5, (n, float(error))


def test_bundled_fno_error_on_odd_sides_is_within_twice_its_error_at_64(bundled_repo):
    model = load_model(bundled_repo, "darcy-fno")
    rng = np.random.default_rng(20261202)  # a seed the training data never used

    def error(n: int) -> float:
        samples = [darcy_sample(DarcyParameters(), n, rng) for _ in range(6)]
        a, u = (np.stack([s[k] for s in samples]) for k in ("a", "u"))
        return relative_l2(model.predict({"a": a})["u"][:, None], u[:, None])

    at_64 = error(64)
    errors = {n: error(n) for n in (41, 63, 65, 85, 127)}
    assert all(e < 2 * at_64 for e in errors.values()), (errors, at_64)


@torch.no_grad()
def test_one_dimensional_layers_match_neuraloperator_on_every_side():
    torch.manual_seed(1)
    upstream = SpectralConv(2, 3, n_modes=(16,))
    conv = ResolutionInvariantSpectralConv(2, 3, n_modes=(16,))
    conv.load_state_dict(upstream.state_dict())
    for n in (16, 63, 64, 255):
        x = torch.randn(4, 2, n)
        torch.testing.assert_close(conv(x), upstream(x))
