"""Refining a proposed answer of a steady family to a tolerance, and scoring it without the solution.

Darcy: conjugate gradients preconditioned by smoothed-aggregation algebraic multigrid (pyamg), started
from the proposed answer. Helmholtz: ILU-preconditioned restarted GMRES from the proposed answer, with the
direct sparse LU solve when it has not met the tolerance. Both solve the very system the data's solver
solves, so the solver's guarantee holds whatever proposed the answer; their work is bounded by
``max_iterations``. The families register these as their ``refine`` and ``indicator`` hooks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pdeserve.datagen import indicators
from pdeserve.datagen.darcy import DarcyParameters, assemble_darcy
from pdeserve.datagen.errors import SolverRefusal
from pdeserve.datagen.families import CLASSICAL, REFINED, Refined
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.helmholtz import (
    HelmholtzParameters,
    HelmholtzSolver,
    benchmark_load,
    factorise,
    helmholtz_reference,
)

# Inner iterations of GMRES between restarts.
GMRES_RESTART = 50


class _Counter:
    """An iterative solver's callback that counts its iterations."""

    def __init__(self) -> None:
        self.iterations = 0

    def __call__(self, _: object) -> None:
        self.iterations += 1


def darcy_score(
    params: DarcyParameters, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> float:
    """The Darcy indicator (``indicators.darcy_indicator``) of one answer."""
    return float(indicators.darcy_indicator(inputs["a"], outputs["u"], params.forcing))


def refine_darcy(
    params: DarcyParameters,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    tolerance: float,
    max_iterations: int,
) -> Refined:
    """AMG-preconditioned conjugate gradients from the proposed ``u`` to a relative residual of
    ``tolerance`` (at most ``max_iterations``)."""
    import pyamg
    import scipy.sparse.linalg as spla

    a = np.asarray(inputs["a"], dtype=np.float64)
    if not np.all(np.isfinite(a)) or a.min() <= 0:
        raise SolverRefusal("the Darcy coefficient must be finite and strictly positive to refine")
    n = a.shape[-1]
    matrix = assemble_darcy(a, UnitSquareGrid(n)).tocsr()
    rhs = np.full(matrix.shape[0], float(params.forcing))
    guess = np.asarray(outputs["u"], dtype=np.float64)[1:-1, 1:-1].ravel()
    preconditioner = pyamg.smoothed_aggregation_solver(matrix, symmetry="hermitian").aspreconditioner()
    counter = _Counter()
    solution, _ = spla.cg(
        matrix, rhs, x0=guess, rtol=tolerance, maxiter=max_iterations, M=preconditioner, callback=counter
    )
    residual = float(np.linalg.norm(rhs - matrix @ solution) / np.linalg.norm(rhs))
    u = np.zeros((n, n))
    u[1:-1, 1:-1] = solution.reshape(n - 2, n - 2)
    return Refined({"u": u}, REFINED, counter.iterations, residual)


def helmholtz_system(params: HelmholtzParameters, c: np.ndarray):
    """``(matrix, load, resolved)``: the finite-element system of the Helmholtz problem on ``c``'s grid,
    and whether the reference solves that very system (the grid resolves the wavelength, as the
    benchmark's 101 x 101 does) rather than a finer one it subsamples."""
    grid = UnitSquareGrid(c.shape[-1])
    matrix = HelmholtzSolver(grid, params.omega).matrix(c).tocsr()
    resolved = grid.n - 1 >= params.min_solve_cells() and params.solve_resolution in (None, grid.n)
    return matrix, benchmark_load(params, grid).ravel(), resolved


def helmholtz_score(
    params: HelmholtzParameters, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> float:
    """The relative residual of one Helmholtz answer in the finite-element system of its grid."""
    matrix, load, _ = helmholtz_system(params, np.asarray(inputs["c"], dtype=np.float64))
    return indicators.linear_residual(matrix, outputs["u"], load)


def refine_helmholtz(
    params: HelmholtzParameters,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    tolerance: float,
    max_iterations: int,
) -> Refined:
    """ILU-preconditioned GMRES from the proposed ``u``; the direct LU solve (path ``classical``) when it
    has not met ``tolerance`` within ``max_iterations``, or when the reference solves a finer grid."""
    import scipy.sparse.linalg as spla

    c = np.asarray(inputs["c"], dtype=np.float64)
    matrix, load, resolved = helmholtz_system(params, c)
    if not resolved:  # the reference solves a finer grid: only its solve gives the reference's answer
        return Refined({"u": helmholtz_reference(params, c)}, CLASSICAL, 0, 0.0)
    counter = _Counter()
    try:
        # This drop tolerance keeps the ILU of the indefinite matrix an accurate approximate inverse
        # (GMRES then needs a few iterations); 1e-4 stalls at the benchmark's frequency.
        factor = spla.spilu(matrix.tocsc(), drop_tol=1e-5, fill_factor=20)
        solution, info = spla.gmres(
            matrix,
            load,
            x0=np.asarray(outputs["u"], dtype=np.float64).ravel(),
            rtol=tolerance,
            restart=min(GMRES_RESTART, max_iterations),
            maxiter=max(1, max_iterations // GMRES_RESTART),
            M=spla.LinearOperator(matrix.shape, factor.solve),
            callback=counter,
            callback_type="pr_norm",
        )
    except RuntimeError:  # a singular incomplete factor
        info = 1
    path = REFINED
    if info != 0 or indicators.linear_residual(matrix, solution, load) > tolerance:
        lu = factorise(matrix.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1)
        solution, path = lu.solve(load), CLASSICAL
    u = solution.reshape(c.shape)
    residual = indicators.linear_residual(matrix, u, load)
    return Refined({"u": u}, path, counter.iterations if path == REFINED else 0, residual)
