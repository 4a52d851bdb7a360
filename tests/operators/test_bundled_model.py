"""The bundled default model meets what the README promises on fresh data from the benchmark distribution."""

import numpy as np

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.operators.evaluation import relative_l2


def test_bundled_darcy_fno_is_below_five_percent_on_unseen_samples(bundled_repo):
    model = load_model(bundled_repo, "darcy-fno")
    metrics = model.card.metrics
    assert model.version == "1" and model.card.training_resolution == (64, 64)
    assert metrics["test_relative_l2"] < 0.05
    assert metrics["test_relative_l2"] < 0.2 * metrics["baseline_mean_relative_l2"]
    rng = np.random.default_rng(20261122)  # a seed the training data never used
    samples = [darcy_sample(DarcyParameters(), 64, rng) for _ in range(16)]
    a = np.stack([s["a"] for s in samples])
    u = np.stack([s["u"] for s in samples])
    error = relative_l2(model.predict({"a": a})["u"][:, None], u[:, None])
    assert error < 0.05, error


def test_bundled_checkpoint_stays_small(bundled_repo):
    size = sum(p.stat().st_size for p in (bundled_repo / "darcy-fno" / "1").iterdir())
    assert size < 3 * 2**20, size
