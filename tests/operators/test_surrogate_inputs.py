"""Inputs a surrogate refuses before they reach the network."""

import numpy as np
import pytest

from pdeserve.operators import InvalidInputError, load_model


@pytest.mark.parametrize("value", [1e300, -1e39, np.finfo(np.float64).max])
def test_float64_values_that_overflow_float32_are_refused(bundled_repo, value):
    model = load_model(bundled_repo, "darcy-fno")
    a = np.full((64, 64), 5.0)
    a[3, 7] = value
    with pytest.raises(InvalidInputError, match="beyond float32"):
        model.predict({"a": a})


def test_largest_float32_value_is_accepted(bundled_repo):
    model = load_model(bundled_repo, "darcy-fno")
    a = np.full((64, 64), 5.0)
    a[0, 0] = 3e38
    assert model.validate({"a": a})[0].shape == (1, 1, 64, 64)
