"""The test error ``train`` reports is the trained weights' error: the one the published model has."""

from pdeserve.operators.evaluation import evaluate
from pdeserve.operators.training import subset


def test_reported_test_error_is_the_trained_models(small_darcy, trained_small):
    surrogate, metrics = trained_small
    held_out = subset(small_darcy, slice(80, 100))  # test_fraction 0.2 of 100 samples: the last 20
    measured = evaluate(surrogate, held_out)
    assert metrics["test_relative_l2"] == measured["relative_l2"]
    assert metrics["test_relative_l2_max"] == measured["relative_l2_max"]
    # Trained: well below the error of the untrained network (about 1) and of the mean field.
    assert metrics["test_relative_l2"] < 0.5 * metrics["baseline_mean_relative_l2"]
