"""The served forward pass (operators/acceleration.py's inference twins) answers what the eager model does."""

import numpy as np
import pytest
import torch

from pdeserve.operators import load_model
from pdeserve.operators.acceleration import (
    CPU_PASS_POINTS,
    InPlaceChannelMLP,
    PointwiseConv1d,
    served_module,
    truncated_spectral_conv,
)
from pdeserve.operators.registry import get_architecture, make_config
from pdeserve.operators.spectral import ResolutionInvariantSpectralConv, TruncatedSpectralConv

TOLERANCE = 1e-5
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]
# Each architecture's native grid (64) and another it accepts: odd sides where the model takes any side.
GRIDS = {"fno": (64, 65, 48), "tfno": (64, 65, 48), "mgno": (64, 48), "galerkin": (64, 65, 48)}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def build(name: str, ndim: int = 2, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    arguments = {**get_architecture(name).default_arguments(ndim, "dirichlet"), **overrides}
    return make_config(name, arguments).build().eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(GRIDS))
@torch.inference_mode()
def test_served_forward_equals_eager_at_native_and_other_grids(name, device):
    model = build(name).to(device)
    served = served_module(model, torch.device(device))
    generator = torch.Generator().manual_seed(1)
    for side in GRIDS[name]:
        for batch in (1, 3):
            x = torch.randn(batch, 1, side, side, generator=generator).to(device)
            expected = model(x)
            answer = served(x)
            assert answer.shape == expected.shape == (batch, 1, side, side)
            assert answer.is_contiguous()
            assert relative(answer, expected) < TOLERANCE, (side, batch, relative(answer, expected))


@pytest.mark.parametrize(
    ("name", "ndim", "overrides", "sides"),
    [
        ("fno", 1, {}, (32, 33, 100)),
        ("tfno", 1, {}, (32, 65)),
        ("fno", 3, {"n_modes": (6, 6, 6), "hidden_channels": 8, "n_layers": 2}, (6, 7, 12)),
        ("galerkin", 1, {"n_layers": 1}, (32, 33, 100)),
    ],
)
@torch.inference_mode()
def test_served_forward_equals_eager_in_one_and_three_dimensions(name, ndim, overrides, sides):
    model = build(name, ndim, **overrides)
    served = served_module(model, torch.device("cpu"))
    for side in sides:  # down to grids with no more points than kept modes
        x = torch.randn(2, 1, *(side,) * ndim)
        assert relative(served(x), model(x)) < TOLERANCE, side


@torch.inference_mode()
def test_a_batch_above_one_pass_runs_in_passes_with_the_same_answers():
    model = build("fno")
    served = served_module(model, torch.device("cpu"))
    passes = []
    served.twin.register_forward_hook(lambda module, args, out: passes.append(len(args[0])))
    per_pass = CPU_PASS_POINTS // 64**2
    x = torch.randn(per_pass + 3, 1, 64, 64)
    answer = served(x)
    assert passes == [per_pass, 3]
    assert answer.shape == (per_pass + 3, 1, 64, 64) and answer.is_contiguous()
    assert relative(answer, model(x)) < TOLERANCE


def test_the_reference_model_is_left_unchanged_and_the_twin_is_inference_only():
    model = build("fno")
    served = served_module(model, torch.device("cpu"))
    assert {type(m) for m in model.modules()} >= {ResolutionInvariantSpectralConv, torch.nn.Conv1d}
    assert TruncatedSpectralConv not in {type(m) for m in model.modules()}
    twin_types = {type(m) for m in served.modules()}
    assert {TruncatedSpectralConv, PointwiseConv1d, InPlaceChannelMLP} <= twin_types
    assert ResolutionInvariantSpectralConv not in twin_types
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in served.parameters())
    # A snapshot: the same weights, not shared ones.
    twin_weights = dict(served.twin.named_parameters())
    for key, value in model.named_parameters():
        assert torch.equal(twin_weights[key], value)
        assert twin_weights[key].data_ptr() != value.data_ptr()


@torch.inference_mode()
def test_float64_inputs_run_the_reference_layers():
    model = build("galerkin", 1, n_layers=1).double()
    served = served_module(model, torch.device("cpu"))
    x = torch.randn(2, 1, 40, dtype=torch.float64)
    assert relative(served(x), model(x)) < 1e-12


def test_bundled_darcy_fno_answers_as_its_eager_model(bundled_repo):
    surrogate = load_model(bundled_repo, "darcy-fno")
    rng = np.random.default_rng(20261203)
    for batch, side in ((1, 64), (5, 64), (2, 85), (3, 63)):
        a = rng.uniform(3.0, 12.0, (batch, side, side)).astype(np.float32)
        stacked, _ = surrogate.validate({"a": a})
        with torch.inference_mode():
            x = surrogate.input_normalizer.transform(torch.from_numpy(stacked))
            expected = surrogate.output_normalizer.inverse_transform(surrogate.model(x)).numpy()
        answer = surrogate.predict({"a": a})["u"]
        assert answer.shape == (batch, side, side)
        error = np.linalg.norm(answer - expected[:, 0]) / np.linalg.norm(expected)
        assert error < TOLERANCE, (batch, side, error)


def test_warm_up_runs_the_native_grid_and_given_shapes(bundled_repo):
    surrogate = load_model(bundled_repo, "darcy-fno")
    surrogate.warm_up()
    surrogate.warm_up(batch=2, sides=(65, 65))
    a = np.ones((65, 65), dtype=np.float32)
    assert surrogate.predict({"a": a})["u"].shape == (65, 65)


@pytest.mark.parametrize("norm", ["forward", "backward", "ortho"])
@pytest.mark.parametrize("sides", [(6,), (7,), (12, 6), (9, 7), (5, 8, 6)])
def test_truncated_spectral_conv_equals_ffts_with_zeroed_modes(norm, sides):
    """Every frequency up to the Nyquist one on even sides, on odd sides, negative frequencies first."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, *sides, generator=generator)
    # Keep all but one mode on every axis but the last (negative ones included), all of the last.
    frequencies = (
        *(tuple(range(-(n // 2), n - n // 2 - 1)) for n in sides[:-1]),
        tuple(range(sides[-1] // 2 + 1)),
    )
    kept = tuple(len(f) for f in frequencies)
    weight = torch.randn(3, 4, *kept, dtype=torch.complex64, generator=generator)
    full = torch.zeros(3, 4, *sides[:-1], sides[-1] // 2 + 1, dtype=torch.complex64)
    full[(slice(None), slice(None), *np.ix_(*frequencies))] = weight
    dims = tuple(range(2, 2 + len(sides)))
    spectrum = torch.fft.rfftn(x, dim=dims, norm=norm)
    expected = torch.fft.irfftn(
        torch.einsum("bi...,io...->bo...", spectrum, full), s=sides, dim=dims, norm=norm
    )
    answer = truncated_spectral_conv(x, weight, frequencies, norm)
    assert answer.shape == expected.shape == (2, 4, *sides)
    assert relative(answer, expected) < TOLERANCE


@torch.inference_mode()
def test_tfno_rebuilds_its_dense_modes_once_per_grid():
    served = served_module(build("tfno"), torch.device("cpu"))
    for side in (64, 8, 64, 8):  # 8 keeps fewer modes than 64
        served(torch.randn(1, 1, side, side))
    convs = [m for m in served.modules() if isinstance(m, TruncatedSpectralConv)]
    assert convs and all(len(conv._dense_modes) == 2 for conv in convs)
    # Built outside inference mode: the twin stays usable where autograd is on.
    assert not any(t.is_inference() for conv in convs for t in conv._dense_modes.values())
