"""Galerkin Transformer: the attentions equal their formulas, the Galerkin one is linear in the number
of points, the model maps fields to fields at any supported resolution in 1D and 2D, the config
validates and survives JSON, and a few Adam steps lower the loss."""

import dataclasses
import json
import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from pdeserve.operators.galerkin import (
    GalerkinAttention,
    GalerkinConfig,
    GalerkinTransformer,
    coarse_side,
    uniform_grid,
)
from pdeserve.operators.registry import config_arguments


def _attention(kind: str, d_model: int = 12, n_heads: int = 3, dim: int = 2) -> GalerkinAttention:
    """An attention module in float64 with every parameter random, so no term of the formula is trivial."""
    torch.manual_seed(0)
    module = GalerkinAttention(d_model, n_heads, dim, kind).double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def _layer_norm(t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis, written out; ``weight``/``bias`` are ``(heads, head_dim)``."""
    mean = t.mean(-1, keepdim=True)
    var = ((t - mean) ** 2).mean(-1, keepdim=True)
    return (t - mean) / torch.sqrt(var + eps) * weight[:, None, :] + bias[:, None, :]


@pytest.mark.parametrize(("kind", "normed"), [("galerkin", {"key", "value"}), ("fourier", {"query", "key"})])
def test_attention_equals_its_explicit_formula(kind, normed):
    module = _attention(kind)
    batch, sides, h, dk, dim = 2, (5, 7), 3, 4, 2
    n = math.prod(sides)
    x = torch.randn(batch, n, h * dk, dtype=torch.float64)
    coords = uniform_grid(sides, torch.float64, x.device)
    assert set(module.norms) == normed

    def heads(name):
        linear = getattr(module, name)
        t = (x @ linear.weight.T + linear.bias).view(batch, n, h, dk).transpose(1, 2)
        if name in normed:
            norm = module.norms[name]
            t = _layer_norm(t, norm.weight, norm.bias, norm.eps)
        return torch.cat([coords.expand(batch, h, n, dim), t], dim=-1)

    q, k, v = heads("query"), heads("key"), heads("value")
    if kind == "galerkin":
        out = torch.einsum("bhnd,bhde->bhne", q, torch.einsum("bhnd,bhne->bhde", k, v)) / n
    else:
        out = torch.einsum("bhnm,bhme->bhne", torch.einsum("bhnd,bhmd->bhnm", q, k), v) / n
    out = out.transpose(1, 2).reshape(batch, n, h * (dk + dim)) @ module.out.weight.T + module.out.bias

    got = module(x, coords)
    assert got.shape == (batch, n, h * dk)
    torch.testing.assert_close(got, out, rtol=1e-6, atol=1e-6)
    assert out.abs().max() > 0.1  # the comparison is not between two near-zero tensors


def test_uniform_grid_is_row_major_linspace():
    grid = uniform_grid((3, 5), torch.float64, torch.device("cpu"))
    assert grid.shape == (15, 2)
    torch.testing.assert_close(grid[7], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(grid[4], torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_projections_start_as_diagonal_plus_xavier():
    d, gain, diagonal = 96, 1e-3, 1e-2
    module = GalerkinAttention(d, 1, 1, "galerkin", xavier_gain=gain, diagonal_weight=diagonal)
    bound = gain * math.sqrt(6 / (2 * d))  # Xavier-uniform bound for a square d x d weight
    for name in ("query", "key", "value"):
        linear = getattr(module, name)
        noise = linear.weight.detach() - diagonal * torch.eye(d)
        assert noise.abs().max() <= bound
        assert noise.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(linear.bias) == 0


def _largest_operand(kind: str, n: int, d_model: int = 32, n_heads: int = 2) -> tuple[int, list[int]]:
    """Largest tensor (element count, shape) any operator consumes during one attention forward."""
    module = GalerkinAttention(d_model, n_heads, 1, kind)
    x = torch.randn(1, n, d_model)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        module(x, uniform_grid((n,), x.dtype, x.device))
    shapes = [list(s) for event in prof.events() for s in event.input_shapes if s]
    largest = max(shapes, key=math.prod)
    return math.prod(largest), largest


def test_galerkin_attention_never_materialises_an_n_by_n_tensor():
    n, d_model, n_heads = 4096, 32, 2
    numel, shape = _largest_operand("galerkin", n, d_model, n_heads)
    # The largest tensor is one head-split Q, K or V with its coordinates: n * (d_model + heads * dim).
    assert numel <= n * (d_model + n_heads * 1), shape
    # The probe does see attention intermediates: the Fourier variant's n x n scores show up.
    numel, shape = _largest_operand("fourier", n, d_model, n_heads)
    assert shape[-2:] == [n, n]


def test_galerkin_flops_grow_linearly_and_fourier_flops_quadratically():
    def flops(kind, n):
        module = GalerkinAttention(32, 2, 1, kind)
        x = torch.randn(1, n, 32)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x, uniform_grid((n,), x.dtype, x.device))
        return counter.get_total_flops()

    assert flops("galerkin", 2048) == 2 * flops("galerkin", 1024)
    assert flops("fourier", 2048) > 3.5 * flops("fourier", 1024)


@pytest.mark.parametrize(
    ("ndim", "sides", "dtype"),
    [
        (1, (64,), torch.float32),
        (1, (203,), torch.float64),
        (2, (24, 24), torch.float64),
        (2, (45, 33), torch.float32),
    ],
)
def test_model_maps_fields_to_fields_at_any_supported_resolution(ndim, sides, dtype):
    config = GalerkinConfig(**GalerkinConfig.grid_defaults(ndim, "dirichlet"), in_channels=2, out_channels=3)
    assert config.resolutions().check(sides) is None
    torch.manual_seed(0)
    model = config.build().to(dtype).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 2, *sides, dtype=dtype))
    assert y.shape == (2, 3, *sides)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()


def test_model_rejects_a_wrong_rank_or_channel_count():
    model = GalerkinConfig(d_model=8, n_layers=1, dim_feedforward=8, modes=4).build()
    with pytest.raises(ValueError, match=r"expected input \(batch, 1, side\)"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(1, 2, 16))


def test_half_precision_autocast_runs_on_a_non_power_of_two_grid():
    config = GalerkinConfig(dim=2, d_model=16, n_heads=2, n_layers=1, dim_feedforward=16, modes=4)
    model = config.build().eval()
    x = torch.randn(1, 1, 30, 27)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05 * reference.abs().max().item())


def test_coarse_grid_and_resolution_rule():
    assert coarse_side(141, 4) == 36  # the paper's Darcy 141 -> 36
    assert coarse_side(64, 4) == 17
    assert coarse_side(64, 1) == 64
    rule = GalerkinConfig(**GalerkinConfig.grid_defaults(2, "dirichlet")).resolutions()
    assert (rule.minimum, rule.maximum, rule.multiple) == (24, 1024, 1)
    assert rule.check((23, 64)) is not None
    assert GalerkinConfig().resolutions().minimum == 32


def test_grid_defaults_are_the_papers_settings_and_3d_is_refused():
    one = GalerkinConfig(**GalerkinConfig.grid_defaults(1, "periodic"))
    assert (one.n_layers, one.d_model, one.n_heads, one.dim_feedforward) == (4, 96, 1, 192)
    assert (one.regressor_layers, one.modes) == (2, 16)
    two = GalerkinConfig(**GalerkinConfig.grid_defaults(2, "dirichlet"))
    assert (two.dim, two.n_layers, two.d_model, two.n_heads, two.dim_feedforward, two.modes) == (
        2,
        6,
        128,
        4,
        256,
        12,
    )
    with pytest.raises(ValueError, match="1D and 2D"):
        GalerkinConfig.grid_defaults(3, "periodic")


def test_config_survives_a_json_round_trip_and_rebuilds_the_same_model():
    config = GalerkinConfig(
        **GalerkinConfig.grid_defaults(2, "periodic"), attention="fourier", out_channels=2
    )
    recorded = json.loads(json.dumps(config_arguments(config)))
    again = GalerkinConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})
    assert again == config
    first, second = config.build().state_dict(), again.build().state_dict()
    assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in second.items()}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"dim": 3}, "dim must be 1 or 2"),
        ({"attention": "softmax"}, "attention must be one of galerkin, fourier"),
        ({"d_model": 96, "n_heads": 5}, "divisible by n_heads"),
        ({"n_layers": 0}, "n_layers must be at least 1"),
        ({"modes": 2.5}, "modes must be an integer"),
        ({"regressor_coordinates": 1}, "regressor_coordinates must be true or false"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"norm_eps": 0.0}, "norm_eps must be positive"),
        ({"xavier_gain": -1.0}, "xavier_gain must be finite and non-negative"),
        ({"max_resolution": 16}, "below the smallest grid side"),
    ],
)
def test_config_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        GalerkinConfig(**arguments)


def test_a_few_adam_steps_lower_the_loss_on_a_small_1d_problem():
    torch.manual_seed(0)
    n, samples = 64, 32
    x = torch.linspace(0, 1, n)
    k = torch.arange(1, 5, dtype=torch.float32)
    coefficients = torch.randn(samples, 4) / k
    u = (coefficients[:, :, None] * torch.sin(2 * math.pi * k[None, :, None] * x)).sum(1, keepdim=True)
    # Target: a smoothed, shifted square of the input (non-local and nonlinear).
    target = torch.roll(u**2, 8, dims=-1)
    target = (target + torch.roll(target, 1, -1) + torch.roll(target, -1, -1)) / 3
    config = GalerkinConfig(
        d_model=16, n_layers=2, dim_feedforward=32, modes=8, regressor_width=16, regressor_hidden=16
    )
    model: GalerkinTransformer = config.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = ((model(u) - target) ** 2).mean() / (target**2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_dataclass_documents_every_field():
    doc = GalerkinConfig.__doc__ or ""
    for field in dataclasses.fields(GalerkinConfig):
        assert field.name in doc, field.name
