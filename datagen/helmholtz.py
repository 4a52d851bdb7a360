"""Variable wave-speed Helmholtz ``-Laplace(u) - (omega / c)^2 u = 0`` on the unit square, Neumann data.

Benchmark (de Hoop, Huang, Qian and Stuart 2022, "The cost-accuracy trade-off in operator learning with
neural networks", arXiv:2203.13181; the Helmholtz data set MgNO, He, Liu and Xu 2024, also reports on):
the operator maps the wave speed ``c`` to the excitation field ``u`` on a 101 x 101 node grid, where

- ``-Laplace(u) - (omega^2 / c(x)^2) u = 0`` in ``(0, 1)^2``, ``omega = 10^3``;
- ``du/dn = 1`` on the top edge where ``|x - 0.5| <= 0.15`` (the segment ``0.35 <= x <= 0.65``) and
  ``du/dn = 0`` on the rest of the boundary (left, right, bottom and the top outside the segment);
- ``c = 20 + tanh(xi)``, so ``19 < c < 21``, and ``xi = sum_k theta_k sqrt(lambda_k) phi_k`` is a
  Karhunen-Loeve expansion with ``theta_k ~ N(0, 1)``, the zero-Neumann cosine eigenfunctions
  ``phi_k = c_k1 c_k2 cos(pi k1 x) cos(pi k2 y)`` (``c_0 = 1``, ``c_k = sqrt 2``) and
  ``lambda_k = (pi^2 |k|^2 + tau^2)^(-d)``, ``tau = 3``, ``d = 2``, i.e. a Gaussian field
  ``N(0, (-Laplace + tau^2)^(-d))`` (zero-Neumann, mean mode excluded) truncated to its 100 leading modes:
  ``k != (0, 0)`` sorted by ``|k|^2``, ties in lexicographic order of ``(k1, k2)``;
- discretised by bilinear (Q1) finite elements on 100 x 100 square cells, 3 x 3 Gauss quadrature with
  ``omega^2 / c^2`` evaluated at the Gauss points, the Neumann load from the nodal values of the
  indicator, and one sparse direct solve (Julia's ``\\``). Arrays are indexed ``[x, y]``.

Sources, read for facts only. The paper's own text could not be read here (only its abstract, at
ar5iv.labs.arxiv.org/html/2203.13181), so the setup above is taken from the authors' generator,
github.com/Zhengyu-Huang/Operator-Learning: ``Helmholtz/src/Box_Neumann_To_Dirichlet.jl``
(``Generate_sol``: omega = 1000, ``x0 = 0.5, d0 = 0.3`` for the top-edge indicator, all four sides
Neumann; ``c_func_random``: ``c = mean + std^2 tanh(a)`` with ``d = 2, tau = 3`` defaults;
``compute_seq_pairs``: the mode order), ``Helmholtz/src/NN-Data-Par.jl`` (``mean, std = 20, 1``,
``N_theta = 100`` modes, ``ne = 100`` cells, ``porder = 1``), ``Mesh.jl``, ``Element.jl``, ``Domain.jl``,
``Solver.jl`` (Q1 quadrilaterals, Gauss quadrature, weak Neumann load, sparse solve). The repository's
README points to the published arrays (data.caltech.edu/records/20091, ``Helmholtz_inputs.npy`` /
``Helmholtz_outputs.npy``, ``nx x ny x ndata``), which MgNO loads in ``utilities3.py``
(``getHelmDataset``; github.com/xlliu2017/MgNO; 101 x 101, 4000 training samples). Not verifiable here:
that the published arrays came from exactly this revision of the script (its seed 123 and Julia's RNG
cannot be reproduced anyway, so samples match in distribution only), and the paper's wording.

Differences from the reference script, each deliberate:

- the Neumann load integrates the indicator of the segment exactly against the boundary hat functions;
  the script integrates its nodal interpolant, and in floating point ``|0.65 - 0.5| > 0.15``, so its
  node at ``x = 0.65`` gets no flux and the effective segment is shifted by ``h / 2``;
- the solver takes ``c`` at the nodes (what a caller of the reference solver has) and evaluates it at the
  Gauss points by bilinear interpolation rather than from the expansion, an ``O(h^2)`` change;
- at the benchmark frequency the grid carries about 12 nodes per shortest wavelength
  (``2 pi 19 / 1000 = 0.119``), so the discrete solution differs markedly from the PDE's (pollution
  error, phase error growing like ``k^3 h^2``). The default solve grid is the output grid when it has
  at least ``points_per_wavelength`` (10) nodes per shortest wavelength, which reproduces the benchmark
  discretisation at 101 x 101; a coarser output grid is solved on the coarsest nested grid that does.
  ``--solve-resolution`` solves finer and subsamples, like Darcy.

Scheme: Q1 finite elements on the node-centred grid (every node, boundary nodes included, is an unknown);
the Neumann condition is natural in the weak form ``int grad u . grad v - (omega / c)^2 u v =
int_boundary g v``, so no ghost points are needed and the nodal error is second order (measured in
the tests). The stiffness matrix and the sparsity pattern depend only on the grid and are built once;
each sample only recomputes the ``(omega / c)^2`` mass term. The matrix is symmetric and indefinite,
so it is factorised by SuperLU (``scipy.sparse.linalg.splu``) with threshold partial pivoting, never by
a Cholesky or pivot-free ``LDL^T`` factorisation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeserve.datagen.errors import SolverRefusal
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.random_fields import NeumannGaussianField

# Largest solve grid: the sparse LU's time and memory grow faster than the node count.
MAX_SOLVE_RESOLUTION = 1025

# Three-point Gauss-Legendre rule on [0, 1] (exact to degree 5), as the benchmark script uses.
_GAUSS_POINTS = 0.5 + np.array([-0.5 * math.sqrt(0.6), 0.0, 0.5 * math.sqrt(0.6)])
_GAUSS_WEIGHTS = np.array([5.0, 8.0, 5.0]) / 18.0


@dataclass(frozen=True)
class HelmholtzParameters:
    """Everything that defines the Helmholtz dataset distribution (recorded in the HDF5 attributes).

    Parameters
    ----------
    omega : float
        Angular frequency; the local wavenumber is ``omega / c`` (benchmark: 1000).
    speed_mean, speed_amplitude : float
        The wave speed is ``c = speed_mean + speed_amplitude tanh(xi)`` (benchmark: 20 and 1), so it lies
        strictly between ``speed_mean - speed_amplitude`` and ``speed_mean + speed_amplitude``.
    alpha, tau : float
        ``xi`` is Gaussian with covariance ``(-Laplace + tau^2)^(-alpha)``, zero-Neumann, without its mean
        mode (the paper's ``d = 2`` and ``tau = 3``). Unlike the Darcy field there is no ``tau^(alpha - 1)``
        prefactor: ``xi`` is ``NeumannGaussianField(alpha, tau)`` divided by ``tau^(alpha - 1)``.
    kl_modes : int
        Modes of the Karhunen-Loeve expansion of ``xi``, lowest ``|k|`` first (benchmark: 100, see
        ``random_fields.kl_mode_order``); 0 keeps every mode the solve grid resolves (``n`` per axis).
    source_center, source_width : float
        ``du/dn = 1`` on the top edge (``y = 1``) where ``|x - source_center| <= source_width / 2``
        (benchmark: 0.5 and 0.3), ``du/dn = 0`` on the rest of the boundary.
    points_per_wavelength : float
        Fewest solve-grid nodes per shortest wavelength ``2 pi min(c) / omega``; fills an unset
        ``solve_resolution`` and refuses a coarser one (the benchmark's 101 x 101 grid has 11.9).
    solve_resolution : int or None
        Nodes per side of the grid the solver runs on; the stored fields are subsampled from it.
        ``None``: the coarsest grid nested with the output that honours ``points_per_wavelength``.
    """

    omega: float = 1000.0
    speed_mean: float = 20.0
    speed_amplitude: float = 1.0
    alpha: float = 2.0
    tau: float = 3.0
    kl_modes: int = 100
    source_center: float = 0.5
    source_width: float = 0.3
    points_per_wavelength: float = 10.0
    solve_resolution: int | None = None

    def __post_init__(self) -> None:
        # Everything is checked here, so the CLI refuses bad options before any work.
        for name in ("omega", "speed_mean", "source_width", "points_per_wavelength"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not (math.isfinite(self.speed_amplitude) and 0 <= self.speed_amplitude < self.speed_mean):
            raise ValueError(
                f"speed_amplitude must lie in [0, speed_mean) so that the wave speed stays positive, "
                f"got {self.speed_amplitude} with speed_mean {self.speed_mean}"
            )
        NeumannGaussianField(self.alpha, self.tau)  # validates alpha and tau
        if int(self.kl_modes) != self.kl_modes or self.kl_modes < 0:
            raise ValueError(f"kl_modes must be a non-negative integer, got {self.kl_modes}")
        start, end = self.source_segment
        if start < 0.0 or end > 1.0:
            raise ValueError(
                f"the source segment [{start:g}, {end:g}] (source_center -+ source_width / 2) "
                "must lie within the top edge [0, 1]"
            )
        if self.solve_resolution is not None and self.solve_resolution < 3:
            raise ValueError(f"solve_resolution must be at least 3, got {self.solve_resolution}")

    @property
    def source_segment(self) -> tuple[float, float]:
        """``(start, end)`` of the top-edge segment carrying ``du/dn = 1``."""
        half = 0.5 * self.source_width
        return self.source_center - half, self.source_center + half

    @property
    def shortest_wavelength(self) -> float:
        """``2 pi min(c) / omega``, the shortest wavelength any sample can have."""
        return 2.0 * math.pi * (self.speed_mean - self.speed_amplitude) / self.omega

    def min_solve_cells(self) -> int:
        """Fewest cells per side that give ``points_per_wavelength`` nodes per shortest wavelength."""
        return max(2, math.ceil(self.points_per_wavelength / self.shortest_wavelength * (1.0 - 1e-12)))

    def as_dict(self) -> dict:
        """The fields as a plain dict (JSON-serialisable)."""
        return asdict(self)

    def for_resolution(self, resolution: int) -> HelmholtzParameters:
        """These parameters with the solver grid fixed for ``resolution`` (validated to nest and resolve).

        Parameters
        ----------
        resolution : int
            Nodes per side of the stored fields.
        """
        out = UnitSquareGrid(resolution)
        cells = self.min_solve_cells()
        if self.solve_resolution is None:
            solve = (resolution - 1) * max(1, math.ceil(cells / (resolution - 1))) + 1
        else:
            solve = self.solve_resolution
            UnitSquareGrid(solve).subsample_factor(out)
            if solve - 1 < cells:
                raise SolverRefusal(
                    f"solve resolution {solve} puts {(solve - 1) * self.shortest_wavelength:.3g} nodes on "
                    f"the shortest wavelength 2 pi min(c) / omega = {self.shortest_wavelength:.4g}, fewer "
                    f"than --points-per-wavelength {self.points_per_wavelength:g}: use --solve-resolution "
                    f">= {cells + 1} (nested with the resolution) or leave it unset"
                )
        if solve > MAX_SOLVE_RESOLUTION:
            raise SolverRefusal(
                f"solve resolution {solve} exceeds {MAX_SOLVE_RESOLUTION}, the largest grid the sparse "
                "direct solver handles in reasonable memory: lower --omega, --points-per-wavelength "
                "or --resolution"
            )
        return replace(self, solve_resolution=solve)

    def speed_from(self, xi: np.ndarray) -> np.ndarray:
        """The wave speed ``c = speed_mean + speed_amplitude tanh(xi)`` of a realisation ``xi``."""
        return self.speed_mean + self.speed_amplitude * np.tanh(xi)

    def sample_log_field(self, grid: UnitSquareGrid, rng: np.random.Generator) -> np.ndarray:
        """One realisation of the Gaussian field ``xi`` at the nodes of ``grid``, shape ``(n, n)``.

        Parameters
        ----------
        grid : UnitSquareGrid
            Where to evaluate the expansion (exactly, at the nodes).
        rng : numpy.random.Generator
            Source of the ``kl_modes`` standard normal coefficients (``n^2`` with ``kl_modes = 0``).
        """
        field = NeumannGaussianField(self.alpha, self.tau)
        # The benchmark's eigenvalues are (pi^2 |k|^2 + tau^2)^(-alpha): no tau^(alpha - 1) prefactor.
        scale = self.tau ** (1.0 - self.alpha)
        if self.kl_modes == 0:
            return scale * field.sample(grid, rng)
        return field.sample_leading(grid, rng, int(self.kl_modes), scale)

    def sample_speed(self, grid: UnitSquareGrid, rng: np.random.Generator) -> np.ndarray:
        """One wave speed ``c`` at the nodes of ``grid``, shape ``(n, n)`` (see ``sample_log_field``)."""
        return self.speed_from(self.sample_log_field(grid, rng))


@functools.lru_cache(maxsize=4)
def _q1_pattern(n: int) -> tuple[np.ndarray, ...]:
    """Grid-only pieces of the Q1 assembly on ``n x n`` nodes, shared by every sample.

    Returns the shape functions at the Gauss points ``(9, 4)``, the per-point element mass kernels
    ``h^2 w_g N_a N_b`` ``(9, 4, 4)``, each cell's nodes ``(E, 4)``, the map from the ``16 E`` element
    entries to the CSC data positions, the CSC ``indices`` and ``indptr``, and the stiffness data.
    """
    h = 1.0 / (n - 1)
    gx, gy = (a.ravel() for a in np.meshgrid(_GAUSS_POINTS, _GAUSS_POINTS, indexing="ij"))
    weights = np.outer(_GAUSS_WEIGHTS, _GAUSS_WEIGHTS).ravel()
    # Local nodes, counter-clockwise from the cell's lower-left corner: (0,0), (1,0), (1,1), (0,1).
    shape = np.stack([(1 - gx) * (1 - gy), gx * (1 - gy), gx * gy, (1 - gx) * gy], axis=1)
    dx = np.stack([-(1 - gy), 1 - gy, gy, -gy], axis=1)
    dy = np.stack([-(1 - gx), -gx, gx, 1 - gx], axis=1)
    # In 2D the Q1 stiffness of a square cell does not depend on its size.
    stiffness = np.einsum("g,ga,gb->ab", weights, dx, dx) + np.einsum("g,ga,gb->ab", weights, dy, dy)
    mass_kernel = h * h * weights[:, None, None] * shape[:, :, None] * shape[:, None, :]
    index = np.arange(n * n).reshape(n, n)
    cells = np.stack([index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]], axis=-1).reshape(-1, 4)
    rows = np.repeat(cells, 4, axis=1).ravel()
    cols = np.tile(cells, (1, 4)).ravel()
    # Sorting the entries by (column, row) gives the CSC layout; duplicates are summed by bincount.
    keys, position = np.unique(cols.astype(np.int64) * (n * n) + rows, return_inverse=True)
    indices = (keys % (n * n)).astype(np.int32)
    indptr = np.searchsorted(keys // (n * n), np.arange(n * n + 1)).astype(np.int32)
    stiffness_data = np.bincount(
        position, weights=np.tile(stiffness.ravel(), len(cells)), minlength=len(keys)
    )
    return shape, mass_kernel, cells, position, indices, indptr, stiffness_data


def apply_mass_1d(values: np.ndarray, h: float, axis: int = -1) -> np.ndarray:
    """The 1D P1 mass matrix (spacing ``h``, end nodes included) applied along ``axis``.

    Parameters
    ----------
    values : ndarray
        Nodal values; ``values.shape[axis]`` nodes at spacing ``h``.
    h : float
        Node spacing.
    axis : int
        Axis holding the nodes.

    Returns
    -------
    ndarray like ``values``: ``int v phi_i`` for the piecewise-linear interpolant ``v`` of the values.
    """
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    out = 4.0 * v
    out[..., 0] = 2.0 * v[..., 0]
    out[..., -1] = 2.0 * v[..., -1]
    out[..., :-1] += v[..., 1:]
    out[..., 1:] += v[..., :-1]
    return np.moveaxis(out * (h / 6.0), -1, axis)


def neumann_load(
    grid: UnitSquareGrid,
    *,
    source: np.ndarray | None = None,
    bottom: np.ndarray | None = None,
    right: np.ndarray | None = None,
    top: np.ndarray | None = None,
    left: np.ndarray | None = None,
) -> np.ndarray:
    """The load vector ``int f v + int_boundary g v`` for data given at the nodes (as an ``(n, n)`` array).

    Each datum is replaced by its Q1 (bilinear, along an edge linear) interpolant and integrated exactly,
    which keeps the scheme second order for smooth data. For the benchmark's discontinuous top-edge data
    use ``segment_load``.

    Parameters
    ----------
    grid : UnitSquareGrid
        The grid.
    source : ndarray of shape (n, n), optional
        Right-hand side ``f`` of ``-Laplace(u) - (omega / c)^2 u = f``.
    bottom, right, top, left : ndarray of shape (n,), optional
        Outward normal derivative ``g = du/dn`` along ``y = 0``, ``x = 1``, ``y = 1``, ``x = 0``,
        ordered by increasing ``x`` (bottom, top) or ``y`` (left, right). A corner node belongs to both
        of its edges, each with its own normal.
    """
    n, h = grid.n, grid.h
    load = np.zeros((n, n))
    if source is not None:
        load += apply_mass_1d(apply_mass_1d(source, h, axis=0), h, axis=1)
    for data, where in ((bottom, (slice(None), 0)), (top, (slice(None), -1)), (left, 0), (right, -1)):
        if data is not None:
            load[where] += apply_mass_1d(np.broadcast_to(np.asarray(data, dtype=np.float64), (n,)), h)
    return load


def segment_load(grid: UnitSquareGrid, start: float, end: float, flux: float = 1.0) -> np.ndarray:
    """The load of ``du/dn = flux`` on the top-edge segment ``start <= x <= end`` (0 elsewhere), exact.

    Entry ``(i, n - 1)`` is ``flux`` times the integral of the hat function of node ``i`` over the
    segment, so the loads sum to ``flux (end - start)`` on every grid.

    Parameters
    ----------
    grid : UnitSquareGrid
        The grid.
    start, end : float
        The segment, ``0 <= start <= end <= 1``.
    flux : float
        The normal derivative on the segment.

    Returns
    -------
    ndarray, shape (n, n), nonzero only in its last column (the top edge).
    """
    h = grid.h

    def hat_integral(t: float) -> np.ndarray:
        # Integral of every node's hat function from -infinity to t (piecewise quadratic in t).
        s = np.clip((t - grid.coordinates) / h, -1.0, 1.0)
        return h * np.where(s <= 0.0, 0.5 * (1.0 + s) ** 2, 1.0 - 0.5 * (1.0 - s) ** 2)

    load = np.zeros((grid.n, grid.n))
    load[:, -1] = flux * (hat_integral(end) - hat_integral(start))
    return load


def factorise(matrix: sp.spmatrix, **options: object) -> spla.SuperLU:
    """``splu(matrix, **options)``; a ``SolverRefusal`` when the matrix is singular (a wave speed for
    which the discrete Helmholtz operator has a zero eigenvalue, e.g. so large that only the Neumann
    Laplacian is left)."""
    try:
        return spla.splu(matrix, **options)
    except RuntimeError as exc:
        raise SolverRefusal(f"the Helmholtz system is singular for this wave speed ({exc})") from None


class HelmholtzSolver:
    """Solves ``-Laplace(u) - (omega / c)^2 u = f`` with Neumann data on one grid, for many wave speeds.

    The stiffness matrix and the sparsity pattern are built once per grid size; each solve assembles
    the ``(omega / c)^2`` mass term and factorises with SuperLU. Safe to share between threads.

    Parameters
    ----------
    grid : UnitSquareGrid
        The grid every wave speed and load lives on.
    omega : float
        Angular frequency.
    """

    def __init__(self, grid: UnitSquareGrid, omega: float) -> None:
        if not (math.isfinite(omega) and omega > 0):
            raise ValueError(f"omega must be positive and finite, got {omega}")
        self.grid = grid
        self.omega = float(omega)
        self._pattern = _q1_pattern(grid.n)

    def matrix(self, c: np.ndarray) -> sp.csc_matrix:
        """The Q1 matrix of ``-Laplace - (omega / c)^2`` on all ``n^2`` nodes, row-major ``(x, y)`` order.

        Parameters
        ----------
        c : ndarray, shape (n, n)
            Positive wave speed at the nodes; bilinearly interpolated to the Gauss points.

        Returns
        -------
        scipy.sparse.csc_matrix, symmetric, indefinite for the benchmark frequency.
        """
        n = self.grid.n
        c = np.asarray(c, dtype=np.float64)
        if c.shape != (n, n):
            raise SolverRefusal(f"the wave speed must have shape {(n, n)}, got {c.shape}")
        if not np.all(np.isfinite(c)) or c.min() <= 0:
            raise SolverRefusal("the wave speed must be finite and strictly positive")
        shape, mass_kernel, cells, position, indices, indptr, stiffness_data = self._pattern
        coefficient = (self.omega / (c.reshape(-1)[cells] @ shape.T)) ** 2  # (cells, Gauss points)
        element_mass = np.einsum("eg,gab->eab", coefficient, mass_kernel)
        data = stiffness_data - np.bincount(position, weights=element_mass.ravel(), minlength=len(indices))
        return sp.csc_matrix((data, indices, indptr), shape=(n * n, n * n))

    def solve(self, c: np.ndarray, load: np.ndarray) -> np.ndarray:
        """``u`` at every node, shape ``(n, n)``.

        Parameters
        ----------
        c : ndarray, shape (n, n)
            Positive wave speed at the nodes.
        load : ndarray, shape (n, n)
            Load vector (``neumann_load``, ``segment_load`` or a sum of them) at the nodes.
        """
        n = self.grid.n
        matrix = self.matrix(c)
        # The symmetric pattern suits a minimum-degree ordering of A^T + A; a pivot threshold below 1
        # keeps most pivots on the diagonal (preserving the ordering) while still pivoting off small ones.
        lu = factorise(
            matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options={"SymmetricMode": True}
        )
        u = lu.solve(np.asarray(load, dtype=np.float64).reshape(n * n))
        if not np.all(np.isfinite(u)):
            raise SolverRefusal("the Helmholtz solve produced non-finite values (a resonant wave speed?)")
        return u.reshape(n, n)


def benchmark_load(params: HelmholtzParameters, grid: UnitSquareGrid) -> np.ndarray:
    """The load of the benchmark's boundary data, ``du/dn = 1`` on the source segment, on ``grid``.

    Parameters
    ----------
    params : HelmholtzParameters
        Holds the source segment.
    grid : UnitSquareGrid
        The grid.
    """
    return segment_load(grid, *params.source_segment)


def solve_helmholtz(c: np.ndarray, params: HelmholtzParameters, grid: UnitSquareGrid) -> np.ndarray:
    """Solve the benchmark problem for one wave speed on its own grid; ``u`` of shape ``(n, n)``.

    Parameters
    ----------
    c : ndarray, shape (n, n)
        Positive wave speed at the nodes of ``grid``.
    params : HelmholtzParameters
        Frequency and source segment (``solve_resolution`` is ignored: this solves on ``grid``).
    grid : UnitSquareGrid
        The grid ``c`` lives on.
    """
    return HelmholtzSolver(grid, params.omega).solve(c, benchmark_load(params, grid))


def helmholtz_batch(
    params: HelmholtzParameters, resolution: int, rngs: Sequence[np.random.Generator]
) -> dict[str, np.ndarray]:
    """Draw one wave speed per generator from the distribution of ``params`` and solve for each.

    Parameters
    ----------
    params : HelmholtzParameters
        The distribution; an unset ``solve_resolution`` is filled by ``for_resolution``.
    resolution : int
        Nodes per side of the returned fields.
    rngs : sequence of numpy.random.Generator
        One generator per sample; a sample depends only on its own generator.

    Returns
    -------
    dict
        ``{"c": wave speeds, "u": solutions}``, both float64 of shape ``(len(rngs), resolution,
        resolution)``, drawn and solved on the solve grid and subsampled.
    """
    params = params.for_resolution(resolution)
    solve_grid = UnitSquareGrid(params.solve_resolution)
    stride = solve_grid.subsample_factor(UnitSquareGrid(resolution))
    solver = HelmholtzSolver(solve_grid, params.omega)
    load = benchmark_load(params, solve_grid)
    c_out, u_out = [], []
    for rng in rngs:
        c = params.sample_speed(solve_grid, rng)
        u = solver.solve(c, load)
        c_out.append(c[::stride, ::stride])
        u_out.append(u[::stride, ::stride])
    empty = np.zeros((0, resolution, resolution))
    return {"c": np.stack(c_out) if c_out else empty, "u": np.stack(u_out) if u_out else empty.copy()}


def helmholtz_sample(
    params: HelmholtzParameters, resolution: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One sample of ``helmholtz_batch``: ``{"c": (resolution, resolution), "u": (resolution, resolution)}``.

    Parameters
    ----------
    params : HelmholtzParameters
        The distribution.
    resolution : int
        Nodes per side.
    rng : numpy.random.Generator
        The sample's generator.
    """
    return {name: values[0] for name, values in helmholtz_batch(params, resolution, [rng]).items()}


def _prolong(values: np.ndarray, stride: int) -> np.ndarray:
    """Bilinear interpolation of nodal values onto the grid refined ``stride`` times (nested nodes)."""
    n = values.shape[-1]
    coarse = np.linspace(0.0, 1.0, n)
    fine = np.linspace(0.0, 1.0, (n - 1) * stride + 1)
    rows = np.stack([np.interp(fine, coarse, row) for row in values])
    return np.stack([np.interp(fine, coarse, col) for col in rows.T], axis=1)


def helmholtz_reference(params: HelmholtzParameters, c: np.ndarray) -> np.ndarray:
    """``u`` for a given wave speed at its own resolution, for the server's check of a surrogate.

    The solve grid is ``params.solve_resolution`` when it nests with ``c``'s grid and resolves the
    wavelength, otherwise the default of ``for_resolution``; a finer solve grid gets ``c`` by bilinear
    interpolation. With the benchmark defaults (output grid = solve grid) this reproduces the stored
    ``u`` of a dataset sample from its stored ``c`` up to the storage precision.

    Parameters
    ----------
    params : HelmholtzParameters
        The dataset's parameters.
    c : ndarray, shape (r, r)
        Positive wave speed at the nodes of the ``r x r`` grid.

    Returns
    -------
    ndarray, shape (r, r), float64.
    """
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise SolverRefusal(f"the wave speed must have shape (r, r), got {c.shape}")
    n = c.shape[-1]
    try:
        params = params.for_resolution(n)
    except ValueError:
        params = replace(params, solve_resolution=None).for_resolution(n)
    stride = (params.solve_resolution - 1) // (n - 1)
    fine = c if stride == 1 else _prolong(c, stride)
    u = solve_helmholtz(fine, params, UnitSquareGrid(params.solve_resolution))
    return u[::stride, ::stride]
