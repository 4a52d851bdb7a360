"""Resolution sweeps and split-conformal calibration, on fresh samples from each family's own sampler."""

import numpy as np
import pytest

from pdeserve.datagen.burgers import BurgersParameters
from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.families import get_family
from pdeserve.operators import validation
from pdeserve.operators.resolution import ResolutionRule
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.training import record_checks, train

# Small widths so that each model trains in seconds on two CPU cores.
TINY = {
    "fno": {"n_modes": [8, 8], "hidden_channels": 8, "n_layers": 2},
    "tfno": {"n_modes": [8, 8], "hidden_channels": 8, "n_layers": 2, "rank": 0.5},
    "mgno": {"channels": 4, "n_layers": 1, "levels": 3},
    "galerkin": {
        "d_model": 8,
        "n_heads": 1,
        "n_layers": 1,
        "dim_feedforward": 16,
        "modes": 6,
        "regressor_width": 8,
        "regressor_hidden": 8,
        "downscale": 2,
    },
}


def test_sweep_runs_from_half_to_four_times_the_training_side_odd_and_even():
    assert validation.sweep_sides(64, ResolutionRule(12, 1024)) == (
        32, 33, 48, 63, 64, 65, 96, 127, 128, 129, 192, 255, 256,
    )  # fmt: skip
    assert validation.sweep_sides(64, ResolutionRule(12, 1024), 2.0)[-1] == 128
    assert validation.sweep_sides(32, ResolutionRule(8, 100, 4)) == (16, 24, 32, 48, 64, 96)


@pytest.fixture(scope="module")
def darcy32():
    params = DarcyParameters().for_resolution(32)
    return validation.fresh_samples(get_family("darcy"), params, 32, 30, seed=5)


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_every_architecture_is_validated_on_the_sides_it_accepts(architecture, darcy32):
    settings = TrainingSettings(epochs=3, batch_size=6, learning_rate=3e-3, test_fraction=0.2, seed=0)
    surrogate, _ = train(darcy32, architecture, TINY[architecture], settings, progress=False)
    card = record_checks(surrogate, darcy32, sweep_samples=1, seed=2)
    sides = [s.side for s in card.validation.sides]
    if architecture == "mgno":  # 2^(levels - 1) = 4 divides every side it accepts
        assert sides == [16, 24, 32, 48, 64, 96, 128]
    else:
        assert sides == [16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 96, 127, 128]
    assert all(0.0 < s.relative_l2 < 1.5 and s.n_samples == 1 for s in card.validation.sides)
    assert card.validation.training_side == 32 and card.validation.max_factor == 2.0
    assert card.input_ranges[0].name == "a" and (card.input_ranges[0].low, card.input_ranges[0].high) == (
        3,
        12,
    )
    assert card.calibration is None  # 6 held-out samples cannot calibrate 90%


def test_too_few_held_out_samples_cannot_calibrate():
    assert validation.min_samples(0.9) == 9 and validation.min_samples(0.95) == 19
    with pytest.raises(ValueError, match=r"8 held-out samples cannot calibrate a coverage of 0\.9"):
        validation.calibrate(None, np.zeros((8, 1, 4)), np.zeros((8, 1, 4)), 0.9)


def test_burgers_error_estimate_covers_fresh_samples_at_its_stated_rate():
    params = BurgersParameters(solve_resolution=256).for_resolution(64)
    family = get_family("burgers")
    data = validation.fresh_samples(family, params, 64, 60, seed=1)
    settings = TrainingSettings(epochs=30, batch_size=8, learning_rate=3e-3, test_fraction=0.2, seed=0)
    surrogate, _ = train(data, "fno", {"n_modes": [16], "hidden_channels": 16}, settings, progress=False)
    calibration_pairs = validation.validation_samples(surrogate, 64, 200, seed=11)
    calibration = validation.calibrate(surrogate, calibration_pairs.x, calibration_pairs.y)
    assert calibration.indicator == "two-solution" and calibration.n_samples == 200
    assert 0.1 < calibration.scale < 2.0
    surrogate.card = surrogate.card.replace(calibration=calibration)
    fresh = validation.validation_samples(surrogate, 64, 200, seed=12)
    assert abs(validation.coverage(surrogate, fresh.x, fresh.y) - 0.9) <= 0.05
