"""MgNO: shapes, config validation and round trip, boundary handling of every operator, the V-cycle
against explicit convolutions, and a short fit."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pdeserve.operators.mgno import MgNOConfig

MODES = ("zeros", "circular", "reflect")


def small(**overrides: Any) -> MgNOConfig:
    """A small config (4 channels, 2 layers, 3 levels) with ``overrides``."""
    return MgNOConfig(**{"channels": 4, "n_layers": 2, "levels": 3, **overrides})


def built(config: MgNOConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """The model of ``config``, seeded, in ``dtype`` and eval mode."""
    torch.manual_seed(seed)
    return config.build().to(dtype).eval()


def pad(x: torch.Tensor, mode: str) -> torch.Tensor:
    """One ghost cell per side, filled as ``mode`` says."""
    return F.pad(x, (1, 1, 1, 1), mode="constant" if mode == "zeros" else mode)


# ---------------------------------------------------------------- shapes and config


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maps_fields_to_fields_at_two_resolutions(dtype):
    model = built(small(in_channels=2, out_channels=3), dtype=dtype)
    with torch.no_grad():
        for shape in [(16, 16), (32, 24)]:
            y = model(torch.randn(2, 2, *shape, dtype=dtype))
            assert y.shape == (2, 3, *shape)
            assert y.dtype == dtype
            assert torch.isfinite(y).all()


def test_default_model_runs_at_64_and_rejects_sides_not_divisible_by_16():
    config = MgNOConfig()
    assert config.resolutions().multiple == 16
    assert config.resolutions().check((64, 64)) is None
    assert "divisible by 16" in config.resolutions().check((72, 64))
    model = built(config, dtype=torch.float32)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)
        with pytest.raises(ValueError, match="divisible by 16"):
            model(torch.randn(1, 1, 72, 64))


def test_parameter_counts_match_the_paper_darcy_model():
    def count(config: MgNOConfig) -> int:
        return sum(p.numel() for p in config.build().parameters())

    # The paper's Darcy model: 24 channels, 4 layers, 6 levels, f restricted as in its code: 0.57M.
    assert count(MgNOConfig(levels=6, residual_restriction=False)) == 572_662
    assert count(MgNOConfig()) == 531_037


def test_resolution_rule_follows_levels_and_padding():
    assert MgNOConfig(levels=4).resolutions().multiple == 8
    assert MgNOConfig(levels=4).resolutions().minimum == 8
    # A one-point coarsest grid cannot be mirrored.
    assert MgNOConfig(levels=4, padding_mode="reflect").resolutions().minimum == 16
    assert MgNOConfig(levels=1).resolutions().multiple == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"levels": 0}, "levels must be a positive integer"),
        ({"levels": 2.5}, "levels must be a positive integer"),
        ({"channels": 0}, "channels must be a positive integer"),
        ({"n_layers": True}, "n_layers must be a positive integer"),
        ({"padding_mode": "mirror"}, "padding_mode must be one of"),
        ({"levels": 3, "pre_smoothing": (1, 2)}, "one entry per level"),
        ({"levels": 2, "pre_smoothing": (0, 1)}, "at least 1 on the finest"),
        ({"levels": 2, "pre_smoothing": (1, -1)}, "non-negative"),
        ({"residual_restriction": "yes"}, "residual_restriction"),
        ({"levels": 12, "max_resolution": 1024}, "at least 2048"),
    ],
)
def test_config_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        MgNOConfig(**arguments)


def test_grid_defaults_map_boundaries_to_padding_and_refuse_other_dimensions():
    assert MgNOConfig.grid_defaults(2, "periodic") == {"padding_mode": "circular"}
    assert MgNOConfig.grid_defaults(2, "dirichlet") == {"padding_mode": "zeros"}
    assert MgNOConfig.grid_defaults(2, "neumann") == {"padding_mode": "reflect"}
    with pytest.raises(ValueError, match="MgNO supports 2D grids only, not 1D"):
        MgNOConfig.grid_defaults(1, "periodic")
    with pytest.raises(ValueError, match="not 3D"):
        MgNOConfig.grid_defaults(3, "periodic")
    with pytest.raises(ValueError, match="unknown boundary"):
        MgNOConfig.grid_defaults(2, "robin")


def test_config_survives_a_json_round_trip():
    config = MgNOConfig(in_channels=2, out_channels=3, levels=4, padding_mode="circular")
    assert config.pre_smoothing == (1, 1, 1, 2)  # the paper's schedule, resolved on construction
    assert config == dataclasses.replace(config, pre_smoothing=(1, 1, 1, 2))
    recorded = json.loads(json.dumps(dataclasses.asdict(config)))
    assert recorded["pre_smoothing"] == [1, 1, 1, 2]
    restored = MgNOConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})
    assert restored == config


def test_importing_the_config_does_not_import_torch():
    code = "import sys, pdeserve.operators.mgno; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------- boundary conditions


def test_periodic_model_commutes_with_coarse_grid_shifts_and_dirichlet_does_not():
    x = torch.randn(2, 1, 16, 24, dtype=torch.float64)
    shifts = [(4, 0), (0, 8), (12, 20)]  # multiples of 2 ** (levels - 1) = 4
    periodic, dirichlet = built(small(padding_mode="circular")), built(small(padding_mode="zeros"))
    with torch.no_grad():
        for model, commutes in [(periodic, True), (dirichlet, False)]:
            y = model(x)
            for shift in shifts:
                difference = (model(x.roll(shift, (-2, -1))) - y.roll(shift, (-2, -1))).abs().max()
                assert (difference < 1e-10) == commutes, (model, shift, difference)


def test_neumann_model_equals_the_periodic_model_on_the_mirrored_grid():
    # Mirror an H x W grid about its edge nodes into a (2H-2) x (2W-2) periodic one. With kernels
    # symmetric in x and y, every reflect-padded convolution equals the circular one there, so the
    # Neumann model reproduces the periodic model on the original grid. One level: a stride-2 coarse
    # grid of an even side is not mirror-symmetric (see the transfer tests for those operators).
    config = small(levels=1, pre_smoothing=(3,), n_layers=2)
    models = {mode: built(dataclasses.replace(config, padding_mode=mode)) for mode in MODES}
    state = models["reflect"].state_dict()
    for key, weight in state.items():
        if weight.ndim == 4:
            state[key] = (weight + weight.flip(-1) + weight.flip(-2) + weight.flip(-1, -2)) / 4
    for model in models.values():
        model.load_state_dict(state)
    x = torch.randn(2, 1, 12, 10, dtype=torch.float64)
    mirrored = torch.cat([x, x.flip(-2)[..., 1:-1, :]], dim=-2)
    mirrored = torch.cat([mirrored, mirrored.flip(-1)[..., 1:-1]], dim=-1)
    with torch.no_grad():
        expected = models["circular"](mirrored)[..., :12, :10]
        torch.testing.assert_close(models["reflect"](x), expected, rtol=0, atol=1e-12)
        # Zero padding gives different boundary values: the test sees the padding.
        assert (models["zeros"](x) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_restriction_pads_with_the_boundary_mode(mode):
    restriction = built(small(padding_mode=mode)).cycles[1].restrictions[0]
    u, f = torch.randn(2, 4, 8, 12, dtype=torch.float64), torch.randn(2, 4, 8, 12, dtype=torch.float64)
    coarse_u, coarse_f = restriction(u, f)
    assert coarse_u.shape == coarse_f.shape == (2, 4, 4, 6)
    residual = f - F.conv2d(pad(u, mode), restriction.A.weight)
    torch.testing.assert_close(coarse_u, F.conv2d(pad(u, mode), restriction.Pi.weight, stride=2))
    torch.testing.assert_close(coarse_f, F.conv2d(pad(residual, mode), restriction.R.weight, stride=2))


def test_prolongation_pads_with_the_boundary_mode():
    torch.manual_seed(1)
    coarse = torch.randn(2, 4, 4, 6, dtype=torch.float64)
    outputs = {}
    for mode in MODES:
        prolongation = built(small(padding_mode=mode)).cycles[1].prolongations[0]
        weight = prolongation.up.weight
        outputs[mode] = prolongation(coarse)
        assert outputs[mode].shape == (2, 4, 8, 12)
        if mode == "zeros":  # the paper's operator: kernel 4, stride 2, padding 1
            expected = F.conv_transpose2d(coarse, weight, stride=2, padding=1)
        elif mode == "circular":  # independent of padding: the middle of a 3 x 3 periodic tiling
            tiled = coarse.repeat(1, 1, 3, 3)
            expected = F.conv_transpose2d(tiled, weight, stride=2, padding=1)[..., 8:16, 12:24]
        else:  # reflected ghost cells, which reach only the outermost fine cells
            expected = F.conv_transpose2d(pad(coarse, "reflect"), weight, stride=2)[..., 3:-3, 3:-3]
            interior = F.conv_transpose2d(coarse, weight, stride=2, padding=1)[..., 1:-1, 1:-1]
            torch.testing.assert_close(expected[..., 1:-1, 1:-1], interior)
        torch.testing.assert_close(outputs[mode], expected)
    # Weights differ per model, so compare modes on one weight: the boundary rows must change.
    prolongation = built(small(padding_mode="reflect")).cycles[1].prolongations[0]
    reflected = prolongation(coarse)
    prolongation.mode = "constant"
    assert (reflected - prolongation(coarse))[..., 0, :].abs().max() > 1e-3


# ---------------------------------------------------------------- the V-cycle itself


@pytest.mark.parametrize("mode", MODES)
def test_one_level_cycle_is_two_smoothing_steps(mode):
    cycle = built(small(levels=1, pre_smoothing=(2,), padding_mode=mode, in_channels=2)).cycles[0]
    first, second = cycle.smoothers[0]
    assert first.A is None and second.A is not None
    f = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    u = F.conv2d(pad(f, mode), first.S.weight)  # u = S f
    u = u + F.conv2d(pad(f - F.conv2d(pad(u, mode), second.A.weight), mode), second.S.weight)
    with torch.no_grad():
        torch.testing.assert_close(cycle(f), u)


@pytest.mark.parametrize("mode", MODES)
def test_two_level_cycle_with_hand_set_weights_adds_the_upsampled_coarse_grid(mode):
    # S = identity, Pi = injection at even points, R = 0, coarse smoother S = 0, prolongation =
    # piecewise-constant: the cycle returns f + nearest-neighbour upsampling of f[::2, ::2].
    cycle = built(small(levels=2, channels=1, padding_mode=mode)).cycles[0]
    with torch.no_grad():
        for p in cycle.parameters():
            p.zero_()
        cycle.smoothers[0][0].S.weight[0, 0, 1, 1] = 1.0
        cycle.restrictions[0].Pi.weight[0, 0, 1, 1] = 1.0
        cycle.prolongations[0].up.weight[0, 0, 1:3, 1:3] = 1.0
        f = torch.randn(2, 1, 8, 12, dtype=torch.float64)
        expected = f + f[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)
        torch.testing.assert_close(cycle(f), expected)


def reference_cycle(cycle: torch.nn.Module, f: torch.Tensor, mode: str) -> torch.Tensor:
    """The V-cycle written out with explicit padding and functional convolutions."""
    u, iterates = None, []
    for level, steps in enumerate(cycle.smoothers):
        if level:
            t = cycle.restrictions[level - 1]
            residual = f - F.conv2d(pad(u, mode), t.A.weight)
            u = F.conv2d(pad(u, mode), t.Pi.weight, stride=2)
            f = F.conv2d(pad(residual, mode), t.R.weight, stride=2)
        for step in steps:
            if step.A is None:
                u = F.conv2d(pad(f, mode), step.S.weight)
            else:
                u = u + F.conv2d(pad(f - F.conv2d(pad(u, mode), step.A.weight), mode), step.S.weight)
        iterates.append(u)
    u = iterates.pop()
    for level in reversed(range(len(iterates))):
        weight = cycle.prolongations[level].up.weight
        u = iterates[level] + F.conv_transpose2d(pad(u, mode), weight, stride=2)[..., 3:-3, 3:-3]
    return u


@pytest.mark.parametrize("mode", MODES)
def test_three_level_cycle_matches_the_written_out_reference(mode):
    model = built(small(levels=3, pre_smoothing=(2, 1, 2), in_channels=2, padding_mode=mode))
    x = torch.randn(2, 2, 16, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.cycles[0](x), reference_cycle(model.cycles[0], x, mode))
        u = F.gelu(reference_cycle(model.cycles[0], x, mode) + model.pointwise[0](x))
        u = F.gelu(reference_cycle(model.cycles[1], u, mode) + model.pointwise[1](u))
        torch.testing.assert_close(model(x), model.head(u))


def test_coarse_levels_may_skip_smoothing_and_restrict_f_directly():
    config = small(levels=3, pre_smoothing=(1, 0, 0), residual_restriction=False)
    model = built(config)
    assert all(t.A is None for t in model.cycles[0].restrictions)
    assert [len(s) for s in model.cycles[0].smoothers] == [1, 0, 0]
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 8, dtype=torch.float64)).shape == (1, 1, 8, 8)


def test_a_few_adam_steps_learn_a_smoothing_stencil():
    torch.manual_seed(0)
    stencil = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 16
    x = torch.randn(16, 1, 16, 16)
    y = F.conv2d(x, stencil, padding=1)
    model = small(channels=8, n_layers=1).build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses
