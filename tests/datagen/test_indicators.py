"""The matrix-free Darcy indicator against the explicit sparse matrix of the data generator."""

import numpy as np
import pytest
from scipy import fft

from pdeserve.datagen.darcy import assemble_darcy, solve_darcy
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.indicators import darcy_indicator, darcy_operator

FORCING = 1.0


def _random_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A positive coefficient spanning 1..13 and a field with non-zero boundary values (which the
    operator must ignore, as the matrix does)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(1.0, 13.0, (n, n)), rng.standard_normal((n, n))


def _sparse_indicator(a: np.ndarray, u: np.ndarray, forcing: float) -> float:
    """The indicator with the residual taken through ``assemble_darcy``."""
    n = a.shape[-1]
    grid = UnitSquareGrid(n)
    interior = u[1:-1, 1:-1]
    residual = forcing - (assemble_darcy(a, grid) @ interior.ravel()).reshape(n - 2, n - 2)
    k = np.arange(1, n - 1)
    eigen = (2.0 - 2.0 * np.cos(np.pi * k / (n - 1))) / grid.h**2
    a_mean = np.exp(np.mean(np.log(a)))
    error = fft.idstn(fft.dstn(residual, type=1) / (a_mean * (eigen[:, None] + eigen[None, :])), type=1)
    return np.linalg.norm(error) / np.linalg.norm(interior)


@pytest.mark.parametrize("n", [17, 64])
def test_operator_equals_the_assembled_matrix(n):
    a, u = _random_problem(n, seed=n)
    expected = (assemble_darcy(a, UnitSquareGrid(n)) @ u[1:-1, 1:-1].ravel()).reshape(n - 2, n - 2)
    got = darcy_operator(a, u)
    assert got.shape == (n - 2, n - 2)
    assert np.linalg.norm(got - expected) <= 1e-10 * np.linalg.norm(expected)


@pytest.mark.parametrize("n", [17, 64])
def test_indicator_equals_the_sparse_matrix_formula(n):
    a, u = _random_problem(n, seed=100 + n)
    # A near-solution as well as a far one: its residual nearly cancels.
    solution = solve_darcy(a, FORCING, UnitSquareGrid(n))
    near = solution + 1e-3 * np.abs(solution).max() * u
    for field in (u, near):
        expected = _sparse_indicator(a, field, FORCING)
        got = darcy_indicator(a, field, FORCING)
        assert isinstance(got, float)
        assert got == pytest.approx(expected, rel=1e-10, abs=0.0)


def test_indicator_of_the_classical_solution_is_at_rounding_level():
    a, _ = _random_problem(33, seed=3)
    u = solve_darcy(a, FORCING, UnitSquareGrid(33))
    assert darcy_indicator(a, u, FORCING) < 1e-12
    assert darcy_indicator(a, 1.01 * u, FORCING) == pytest.approx(
        _sparse_indicator(a, 1.01 * u, FORCING), rel=1e-10
    )


def test_batched_indicator_equals_one_sample_at_a_time():
    problems = [_random_problem(17, seed) for seed in range(6)]
    a = np.stack([p[0] for p in problems]).reshape(2, 3, 17, 17)
    u = np.stack([p[1] for p in problems]).reshape(2, 3, 17, 17)
    got = darcy_indicator(a, u, FORCING)
    assert got.shape == (2, 3)
    expected = np.array([_sparse_indicator(pa, pu, FORCING) for pa, pu in problems]).reshape(2, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0.0)


def test_zero_answer_scores_infinity_and_mismatched_shapes_are_refused():
    a, _ = _random_problem(9, seed=0)
    assert darcy_indicator(a, np.zeros((9, 9)), FORCING) == float("inf")
    assert darcy_indicator(a[None], np.zeros((1, 9, 9)), FORCING).tolist() == [float("inf")]
    with pytest.raises(ValueError, match="shape"):
        darcy_indicator(a, np.zeros((8, 8)), FORCING)
