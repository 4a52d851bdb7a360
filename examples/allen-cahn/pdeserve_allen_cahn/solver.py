"""The classical solver: bilinear finite elements (scikit-fem) and a linearly implicit BDF2 time step.

``u_t = eps^2 Lap(u) + u - u^3`` on the unit square, ``du/dn = 0`` on its boundary (the natural
boundary condition of the weak form, so nothing is imposed). Space: Q1 elements on the uniform node grid
(one unknown per node), consistent stiffness matrix ``K``, lumped mass matrix ``M``. Time: BDF2 with the
reaction term extrapolated and a second-order stabilisation ``S (u^{n+1} - 2 u^n + u^{n-1})``, started by
one stabilised semi-implicit Euler step, so every step solves the same constant, symmetric positive
definite system ``((3 / (2 dt) + S) M + eps^2 K) u^{n+1} = rhs``: it is factorised once per grid and step
(SuperLU) and each step is one pair of triangular solves for the whole batch of samples.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import skfem
from skfem.models.poisson import laplace, mass

STABILISATION = 2.0
"""``S``, at least the reaction's Lipschitz bound on ``|u| <= 1`` (``|1 - 3 u^2| <= 2``)."""


def node_interpolation(source: int, target: int) -> np.ndarray:
    """Linear interpolation from ``source`` to ``target`` nodes on [0, 1], ends included, as a
    ``(target, source)`` matrix: a field's bilinear interpolant is ``P @ values @ P.T``."""
    coarse, fine = np.linspace(0.0, 1.0, source), np.linspace(0.0, 1.0, target)
    return np.stack([np.interp(fine, coarse, unit) for unit in np.eye(source)], axis=1)


def resample(fields: np.ndarray, n: int) -> np.ndarray:
    """Bilinear interpolation of ``(batch, m, m)`` node fields onto ``n x n`` nodes."""
    m = fields.shape[-1]
    if m == n:
        return fields
    p = node_interpolation(m, n)
    return p @ fields @ p.T  # two matrix products: O(n^3) per sample, where a three-operand einsum is O(n^4)


class AllenCahnSolver:
    """Advances batches of states on one ``n x n`` node grid with one time step.

    Parameters
    ----------
    n : int
        Nodes per side (boundary nodes included).
    epsilon : float
        Interface parameter ``eps``.
    time_step : float
        BDF2 step ``dt``.
    """

    def __init__(self, n: int, epsilon: float, time_step: float) -> None:
        if n < 3:
            raise ValueError(f"the grid needs at least 3 nodes per side, got {n}")
        if not time_step > 0:
            raise ValueError(f"the time step must be positive, got {time_step}")
        nodes = np.linspace(0.0, 1.0, n)
        mesh = skfem.MeshQuad.init_tensor(nodes, nodes)
        basis = skfem.Basis(mesh, skfem.ElementQuad1())
        stiffness = skfem.asm(laplace, basis)
        lumped = np.asarray(skfem.asm(mass, basis).sum(axis=1)).ravel()
        index = np.rint(mesh.p * (n - 1)).astype(np.int64)
        self.order = index[0] * n + index[1]  # unknown k lives at grid node order[k] (row-major (x, y))
        self.n, self.time_step, self.mass = n, time_step, lumped[:, None]
        s, eps2, m = STABILISATION, epsilon**2, sp.diags(lumped)
        self._euler = spla.splu(((1.0 / time_step + s) * m + eps2 * stiffness).tocsc())
        self._bdf2 = spla.splu(((1.5 / time_step + s) * m + eps2 * stiffness).tocsc())

    def advance(self, states: np.ndarray, duration: float) -> np.ndarray:
        """``(batch, n, n)`` states a time ``duration`` later (a whole number of steps, at least one)."""
        n, dt, s, m = self.n, self.time_step, STABILISATION, self.mass
        states = np.asarray(states, dtype=np.float64)
        if states.shape[1:] != (n, n):
            raise ValueError(f"states must have shape (batch, {n}, {n}), got {states.shape}")
        steps = max(1, round(duration / dt))
        u = states.reshape(len(states), n * n)[:, self.order].T.copy()  # unknowns x batch

        def reaction(v: np.ndarray) -> np.ndarray:
            return v - v**3

        previous, u = u, self._euler.solve(m * (u / dt + reaction(u) + s * u))
        for _ in range(steps - 1):
            rhs = m * ((2.0 * u - 0.5 * previous) / dt + 2.0 * reaction(u) - reaction(previous))
            rhs += m * (s * (2.0 * u - previous))
            previous, u = u, self._bdf2.solve(rhs)
        out = np.empty((u.shape[1], n * n))
        out[:, self.order] = u.T
        return out.reshape(-1, n, n)


@functools.lru_cache(maxsize=32)
def solver(n: int, epsilon: float, time_step: float) -> AllenCahnSolver:
    """The solver of a grid and step, factorised once per process (a few ms to a second)."""
    return AllenCahnSolver(n, epsilon, time_step)


def solve_on(states: np.ndarray, m: int, epsilon: float, time_step: float, duration: float) -> np.ndarray:
    """``(batch, n, n)`` node states advanced on an ``m x m`` grid: interpolated onto it bilinearly,
    advanced, and interpolated back onto the ``n x n`` nodes."""
    n = states.shape[-1]
    fine = solver(m, epsilon, time_step).advance(resample(np.asarray(states, dtype=np.float64), m), duration)
    return resample(fine, n)
