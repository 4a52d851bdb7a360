import numpy as np
import pytest

from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.training import split, train


def test_short_training_beats_the_mean_predictor_by_far(trained_small):
    surrogate, metrics = trained_small
    assert metrics["baseline_mean_relative_l2"] > 0.15
    assert metrics["test_relative_l2"] < 0.5 * metrics["baseline_mean_relative_l2"], metrics
    assert surrogate.card.dataset.n_test == 20
    assert surrogate.card.training_resolution == (33, 33)
    assert surrogate.card.metrics == metrics and len(surrogate.card.history) == 40


def test_relative_l2_is_the_norm_ratio():
    target = np.ones((2, 1, 4, 4))
    assert abs(relative_l2(1.1 * target, target) - 0.1) < 1e-6
    assert relative_l2(target, target) == 0.0


def test_split_holds_out_the_last_samples():
    train_part, val_part, test_part = split(100, 0.1)
    assert (train_part.stop, val_part.start, val_part.stop, test_part.start) == (90, 90, 90, 90)
    train_part, val_part, test_part = split(100, 0.1, 0.15)
    assert (train_part.stop, val_part.start, val_part.stop, test_part.start, test_part.stop) == (
        75,
        75,
        90,
        90,
        100,
    )
    with pytest.raises(ValueError, match="cannot be split"):
        split(1, 0.5)


def test_unsuitable_grid_is_refused_before_training(small_darcy):
    with pytest.raises(ValueError, match="does not suit fno"):
        train(small_darcy, "fno", {"n_modes": [40, 40]}, TrainingSettings(epochs=1), progress=False)
    with pytest.raises(ValueError, match="unknown fno arguments: widht"):
        train(small_darcy, "fno", {"widht": 3}, TrainingSettings(epochs=1), progress=False)
