"""The bundled default model meets what the README promises on fresh data from the benchmark distribution."""

import numpy as np

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.validation import coverage


def test_bundled_darcy_fno_is_below_five_percent_on_unseen_samples(bundled_repo):
    model = load_model(bundled_repo, "darcy-fno")
    metrics = model.card.metrics
    assert model.version == "6" and model.card.training_resolution == (64, 64)
    assert metrics["test_relative_l2"] < 0.05
    assert metrics["test_relative_l2"] < 0.2 * metrics["baseline_mean_relative_l2"]
    rng = np.random.default_rng(20261122)  # a seed the training data never used
    samples = [darcy_sample(DarcyParameters(), 64, rng) for _ in range(16)]
    a = np.stack([s["a"] for s in samples])
    u = np.stack([s["u"] for s in samples])
    error = relative_l2(model.predict({"a": a})["u"][:, None], u[:, None])
    assert error < 0.05, error


def test_bundled_checkpoint_stays_small(bundled_repo):
    size = sum(p.stat().st_size for p in (bundled_repo / "darcy-fno" / "6").iterdir())
    assert size < 3 * 2**20, size


def test_bundled_error_estimate_covers_fresh_samples_at_its_stated_rate(bundled_repo):
    model = load_model(bundled_repo, "darcy-fno")
    calibration = model.card.calibration
    assert calibration.coverage == 0.9 and calibration.n_samples == 200
    assert model.card.lineage.mode == "validate" and model.card.lineage.parent == "5"
    rng = np.random.default_rng(20261203)  # never used by training, calibration or the sweep
    samples = [darcy_sample(DarcyParameters(), 64, rng) for _ in range(200)]
    x = np.stack([s["a"] for s in samples])[:, None].astype(np.float32)
    y = np.stack([s["u"] for s in samples])[:, None].astype(np.float32)
    assert abs(coverage(model, x, y) - 0.9) <= 0.05


def test_bundled_model_is_validated_from_half_to_four_times_its_grid(bundled_repo):
    validation = load_model(bundled_repo, "darcy-fno").card.validation
    sides = [s.side for s in validation.sides]
    assert sides == [32, 33, 48, 63, 64, 65, 96, 127, 128, 129, 192, 255, 256]
    training = next(s.relative_l2 for s in validation.sides if s.side == 64)
    assert training < 0.03 and validation.validated_range() == (32, 256)
