"""Steady Darcy flow ``-div(a grad u) = f`` on the unit square with ``u = 0`` on the boundary.

Scheme: second-order 5-point finite differences on a node-centred grid, the coefficient on each cell
face the arithmetic mean of its two nodes, and a sparse direct LDL^T solve (QDLDL) of the interior
unknowns. Every coefficient on a grid gives the same sparsity pattern, so the symbolic factorisation
(fill-reducing ordering, elimination tree) is computed once per grid and reused for every sample.
Benchmark distribution (Li et al. 2021, FNO): ``f = 1``; ``a = 12`` where ``g >= 0`` and ``a = 3`` where
``g < 0``, ``g`` the Neumann Gaussian field with ``alpha = 2, tau = 3``; solved fine and subsampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import qdldl
import scipy.sparse as sp

from pdeserve.datagen.errors import SolverRefusal
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.random_fields import NeumannGaussianField


def assemble_darcy(a: np.ndarray, grid: UnitSquareGrid) -> sp.csc_matrix:
    """The finite-difference matrix of ``-div(a grad .)`` on the interior nodes.

    Parameters
    ----------
    a : ndarray, shape (n, n)
        Positive coefficient at every node of ``grid`` (boundary nodes included: they set face values).
    grid : UnitSquareGrid
        The grid ``a`` lives on.

    Returns
    -------
    scipy.sparse.csc_matrix of shape ((n-2)^2, (n-2)^2), symmetric positive definite, row-major
    ordering of the interior nodes.
    """
    n = grid.n
    if a.shape != (n, n):
        raise SolverRefusal(f"coefficient must have shape {(n, n)}, got {a.shape}")
    m = n - 2
    # Face coefficients between interior node (i, j) and its four neighbours.
    east = 0.5 * (a[1:-1, 1:-1] + a[2:, 1:-1])
    west = 0.5 * (a[1:-1, 1:-1] + a[:-2, 1:-1])
    north = 0.5 * (a[1:-1, 1:-1] + a[1:-1, 2:])
    south = 0.5 * (a[1:-1, 1:-1] + a[1:-1, :-2])
    index = np.arange(m * m).reshape(m, m)
    rows = [index.ravel()]
    cols = [index.ravel()]
    vals = [(east + west + north + south).ravel()]
    # Off-diagonal couplings exist only between interior neighbours; boundary values are zero.
    for coeff, di, dj in ((east, 1, 0), (west, -1, 0), (north, 0, 1), (south, 0, -1)):
        src = index[max(0, -di) : m - max(0, di), max(0, -dj) : m - max(0, dj)]
        dst = index[max(0, di) : m + min(0, di) or None, max(0, dj) : m + min(0, dj) or None]
        c = coeff[max(0, -di) : m - max(0, di), max(0, -dj) : m - max(0, dj)]
        rows.append(src.ravel())
        cols.append(dst.ravel())
        vals.append(-c.ravel())
    matrix = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m)
    )
    return (matrix / grid.h**2).tocsc()


class DarcySolver:
    """Solves ``-div(a grad u) = f`` (``u = 0`` on the boundary) on one grid for many coefficients.

    The first solve factorises symbolically and numerically; later solves refactorise numerically only.
    Not thread-safe: use one solver per thread.

    Parameters
    ----------
    grid : UnitSquareGrid
        The grid every coefficient and forcing lives on.
    """

    def __init__(self, grid: UnitSquareGrid) -> None:
        self.grid = grid
        self._ldl: qdldl.Solver | None = None

    def solve(self, a: np.ndarray, f: np.ndarray | float) -> np.ndarray:
        """``u`` at every node, shape (n, n).

        Parameters
        ----------
        a : ndarray, shape (n, n)
            Positive coefficient at the nodes.
        f : ndarray of shape (n, n), or float
            Forcing at the nodes (only interior values are used), or a constant.
        """
        if not np.all(np.isfinite(a)) or np.min(a) <= 0:
            raise SolverRefusal("the Darcy coefficient must be finite and strictly positive")
        n = self.grid.n
        upper = sp.triu(assemble_darcy(np.asarray(a, dtype=np.float64), self.grid), format="csc")
        if self._ldl is None:
            self._ldl = qdldl.Solver(upper, upper=True)
        else:
            self._ldl.update(upper, upper=True)
        rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (n, n))[1:-1, 1:-1].ravel()
        u = np.zeros((n, n))
        u[1:-1, 1:-1] = self._ldl.solve(rhs).reshape(n - 2, n - 2)
        return u


def solve_darcy(a: np.ndarray, f: np.ndarray | float, grid: UnitSquareGrid) -> np.ndarray:
    """Solve ``-div(a grad u) = f``, ``u = 0`` on the boundary, once; see ``DarcySolver`` for many."""
    return DarcySolver(grid).solve(a, f)


COEFFICIENTS = ("piecewise", "lognormal")


@dataclass(frozen=True)
class DarcyParameters:
    """Everything that defines the Darcy dataset distribution (recorded in the HDF5 attributes).

    Parameters
    ----------
    coefficient : str
        How the Gaussian field ``g`` becomes the coefficient ``a``. ``"piecewise"`` (the FNO benchmark):
        ``a = HIGH`` where ``g >= 0`` and ``LOW`` elsewhere. ``"lognormal"``: ``a = sqrt(HIGH LOW)
        exp(log(HIGH / LOW) g / (4 sigma))`` with ``sigma`` the domain-averaged standard deviation of
        ``g``, so ``a`` spans ``[LOW, HIGH]`` within two standard deviations (about 95% of the points).
    contrast : str
        ``"HIGH/LOW"``, the two coefficient levels (the benchmark uses ``"12/3"``).
    alpha, tau : float
        Parameters of the Gaussian field ``g``.
    forcing : float
        Constant right-hand side ``f``.
    solve_resolution : int or None
        Nodes per side of the grid the solver runs on; the stored fields are subsampled from it.
        ``None`` solves at the output resolution.
    """

    coefficient: str = field(default="piecewise", metadata={"choices": COEFFICIENTS})
    contrast: str = "12/3"
    alpha: float = 2.0
    tau: float = 3.0
    forcing: float = 1.0
    solve_resolution: int | None = None

    def __post_init__(self) -> None:
        NeumannGaussianField(self.alpha, self.tau)  # validates alpha and tau
        if self.coefficient not in COEFFICIENTS:
            raise ValueError(
                f"coefficient must be one of {', '.join(COEFFICIENTS)}, got {self.coefficient!r}"
            )
        _ = self.levels  # parsing validates the contrast

    @property
    def levels(self) -> tuple[float, float]:
        """``(HIGH, LOW)`` parsed from ``contrast``."""
        high, sep, low = str(self.contrast).partition("/")
        try:
            values = (float(high), float(low))
        except ValueError:
            values = ()
        if not sep or not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(
                f"contrast must be HIGH/LOW with two positive numbers, e.g. 12/3, got {self.contrast!r}"
            )
        return values

    def coefficient_from(self, g: np.ndarray) -> np.ndarray:
        """The coefficient ``a`` of a realisation ``g`` of the Gaussian field."""
        high, low = self.levels
        if self.coefficient == "piecewise":
            return np.where(g >= 0.0, high, low)
        sigma = math.sqrt(NeumannGaussianField(self.alpha, self.tau).average_variance())
        return math.sqrt(high * low) * np.exp(math.log(high / low) / (4.0 * sigma) * g)

    def as_dict(self) -> dict:
        return asdict(self)

    def for_resolution(self, resolution: int) -> DarcyParameters:
        """These parameters with the solver grid fixed for ``resolution`` (validated to nest)."""
        solve = self.solve_resolution or resolution
        UnitSquareGrid(solve).subsample_factor(UnitSquareGrid(resolution))
        return replace(self, solve_resolution=solve)


def darcy_batch(
    params: DarcyParameters, resolution: int, rngs: Sequence[np.random.Generator]
) -> dict[str, np.ndarray]:
    """Draw one coefficient per generator from the distribution of ``params`` and solve for each.

    Returns ``{"a": coefficients, "u": solutions}``, both of shape ``(len(rngs), resolution, resolution)``.
    """
    out_grid = UnitSquareGrid(resolution)
    solve_grid = UnitSquareGrid(params.solve_resolution or resolution)
    stride = solve_grid.subsample_factor(out_grid)
    field = NeumannGaussianField(params.alpha, params.tau)
    solver = DarcySolver(solve_grid)
    a_out, u_out = [], []
    for rng in rngs:
        a = params.coefficient_from(field.sample(solve_grid, rng))
        u = solver.solve(a, params.forcing)
        a_out.append(a[::stride, ::stride])
        u_out.append(u[::stride, ::stride])
    return {"a": np.stack(a_out), "u": np.stack(u_out)}


def darcy_sample(params: DarcyParameters, resolution: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sample of ``darcy_batch``: ``{"a": (resolution, resolution), "u": (resolution, resolution)}``."""
    return {name: values[0] for name, values in darcy_batch(params, resolution, [rng]).items()}
