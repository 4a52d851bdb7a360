"""The classical ladders of the built-in families: cheaper (and finer) settings of their solvers.

Each rung solves a batch of inputs on its own grid and answers on the inputs' grid: the input is
interpolated onto the solve grid and the answer back (bilinear on the node grids of Darcy and
Helmholtz, trigonometric on the periodic grids of Burgers and Navier-Stokes). The time-dependent families'
rungs add a time step, and answer at ``record_times(parameters)`` from the input state (t = 0), so a caller
that starts from a later state passes the parameters of the interval it wants (``final_time``,
``record_every``). A step the family's a-priori check refuses on a grid is left out.

The rungs are the payoff benchmark's classical side (bench/payoff.py) and the router's classical paths
(serving/router.py, measured in the model card's ledger): one code path for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import signal

from pdeserve.datagen import burgers, darcy, helmholtz, navier_stokes
from pdeserve.datagen.errors import SolverRefusal
from pdeserve.datagen.families import Rung
from pdeserve.datagen.grids import UnitSquareGrid

# Solve grids of each ladder (nodes per side on node grids, points on periodic ones), and time steps.
DARCY_GRIDS = (9, 17, 22, 33, 43, 64, 127, 253)
DARCY_AMG_TOLERANCES = (1e-2, 1e-6)
HELMHOLTZ_GRIDS = (17, 33, 51, 101, 151, 201, 301)
BURGERS_GRIDS = (16, 32, 64, 128, 256)
BURGERS_STEPS = (1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.25)
NAVIER_STOKES_GRIDS = (8, 16, 32, 64)
NAVIER_STOKES_STEPS = (1e-3, 2e-3, 4e-3, 5e-3, 8e-3, 1e-2, 1.6e-2, 3.2e-2)
# Finest solve grid of a node-grid ladder, in output grid intervals (a periodic one: up to the output's
# points for Burgers, twice them for Navier-Stokes).
NODE_GRID_MULTIPLE = 4


def ladder_parameters(params: Any, horizon: Sequence[float]) -> Any:
    """``params`` whose rungs answer at ``horizon``, evenly spaced times after the start state (a
    time-dependent family's ``final_time`` and ``record_every``); unchanged for an empty ``horizon``
    (a steady family). ``SolverRefusal`` for times that are not evenly spaced from the start."""
    if not len(horizon):
        return params
    interval = float(horizon[0])
    if not np.allclose(horizon, interval * np.arange(1, len(horizon) + 1)):
        raise SolverRefusal(f"the ladder answers at evenly spaced times, not at {list(horizon)}")
    return replace(params, final_time=float(horizon[-1]), record_every=interval)


def node_interpolation(source: int, target: int) -> np.ndarray:
    """Linear interpolation from ``source`` to ``target`` nodes on [0, 1] (boundary nodes included), as a
    ``(target, source)`` matrix: bilinear interpolation of a grid is ``P @ values @ P.T``."""
    coarse, fine = np.linspace(0.0, 1.0, source), np.linspace(0.0, 1.0, target)
    return np.stack([np.interp(fine, coarse, unit) for unit in np.eye(source)], axis=1)


def fourier_resample(values: np.ndarray, n: int, axes: Sequence[int]) -> np.ndarray:
    """Trigonometric interpolation of periodic ``values`` onto ``n`` points along each of ``axes``."""
    for axis in axes:
        if values.shape[axis] != n:
            values = signal.resample(values, n, axis=axis)
    return values


def on_node_grid(
    m: int, solve_one: Callable[[np.ndarray], np.ndarray], field: str, output: str
) -> Callable[[Any, Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """A rung's solve: each sample's ``field`` interpolated onto the ``m``-node grid, solved by
    ``solve_one`` there, and the answer interpolated back onto the input's grid (``{output: ...}``)."""

    def solve(params: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = np.asarray(inputs[field], dtype=np.float64)
        r = values.shape[-1]
        if r < 3:
            raise SolverRefusal(f"a node grid needs at least 3 nodes per side, got {r}")
        down, up = node_interpolation(r, m), node_interpolation(m, r)
        return {output: np.stack([up @ solve_one(down @ s @ down.T) @ up.T for s in values])}

    return solve


def amg_pcg(a: np.ndarray, grid: UnitSquareGrid, forcing: float, tol: float) -> np.ndarray:
    """Darcy by CG preconditioned by one smoothed-aggregation V-cycle (set-up included), on ``grid``."""
    import pyamg

    if not np.all(np.isfinite(a)) or np.min(a) <= 0:
        raise SolverRefusal("the Darcy coefficient must be finite and strictly positive")
    m = grid.n
    matrix = darcy.assemble_darcy(a, grid).tocsr()
    hierarchy = pyamg.smoothed_aggregation_solver(matrix, symmetry="hermitian")
    u = np.zeros((m, m))
    rhs = np.full((m - 2) ** 2, forcing)
    u[1:-1, 1:-1] = hierarchy.solve(rhs, tol=tol, accel="cg", maxiter=500).reshape(m - 2, m - 2)
    return u


def _node_grids(grids: Sequence[int], resolution: int) -> list[int]:
    return [m for m in grids if m <= NODE_GRID_MULTIPLE * (resolution - 1) + 1]


def darcy_ladder(params: darcy.DarcyParameters, resolution: int) -> list[Rung]:
    """The direct LDL^T solve and AMG-preconditioned CG (two tolerances) on each grid, coarsest first."""
    rungs = []
    for m in _node_grids(DARCY_GRIDS, resolution):
        grid, solver = UnitSquareGrid(m), darcy.DarcySolver(UnitSquareGrid(m))
        direct = on_node_grid(m, lambda a, solver=solver: solver.solve(a, params.forcing), "a", "u")
        rungs.append(Rung(f"direct LDL^T, grid {m}", {"method": "direct LDL^T", "grid": m}, direct, False))
        for tol in DARCY_AMG_TOLERANCES:
            method = f"AMG-PCG rtol {tol:g}"
            amg = on_node_grid(
                m, lambda a, grid=grid, tol=tol: amg_pcg(a, grid, params.forcing, tol), "a", "u"
            )
            rungs.append(Rung(f"{method}, grid {m}", {"method": method, "grid": m}, amg, False))
    return rungs


def helmholtz_ladder(params: helmholtz.HelmholtzParameters, resolution: int) -> list[Rung]:
    """The sparse LU solve on each grid, coarsest first."""
    rungs = []
    for m in _node_grids(HELMHOLTZ_GRIDS, resolution):
        grid = UnitSquareGrid(m)
        solver = helmholtz.HelmholtzSolver(grid, params.omega)
        load = helmholtz.benchmark_load(params, grid)
        direct = on_node_grid(m, lambda c, solver=solver, load=load: solver.solve(c, load), "c", "u")
        rungs.append(Rung(f"direct LU, grid {m}", {"method": "direct LU", "grid": m}, direct, False))
    return rungs


def _stable(check: Callable[[], Any]) -> bool:
    """Whether the family's parameter check accepts a grid and step (it refuses unstable steps)."""
    try:
        check()
    except ValueError:
        return False
    return True


def burgers_ladder(params: burgers.BurgersParameters, resolution: int) -> list[Rung]:
    """ETDRK4 pseudo-spectral on each grid up to ``resolution`` points and every stable step, answering
    at ``record_times(params)``."""
    method = "pseudo-spectral ETDRK4"
    rungs = []
    for n in (n for n in BURGERS_GRIDS if n <= resolution):
        for dt in BURGERS_STEPS:
            if not _stable(
                lambda n=n, dt=dt: replace(params, solve_resolution=n, time_step=dt).for_resolution(n)
            ):
                continue

            def solve(p: burgers.BurgersParameters, inputs: Mapping[str, np.ndarray], n=n, dt=dt) -> dict:
                u0 = np.asarray(inputs["u0"], dtype=np.float64)
                u = burgers.solve_burgers(
                    fourier_resample(u0, n, (-1,)), p.viscosity, dt, burgers.record_times(p)
                )
                return {"u": fourier_resample(u, u0.shape[-1], (-1,))}

            settings = {"method": method, "grid": n, "time_step": dt}
            rungs.append(Rung(f"{method}, grid {n}, dt {dt:g}", settings, solve))
    return rungs


def navier_stokes_ladder(params: navier_stokes.NavierStokesParameters, resolution: int) -> list[Rung]:
    """CNAB2 pseudo-spectral (float64, torch on the CPU) on each grid from 8 to twice ``resolution``
    points and every step the solver's check admits over the first recorded interval (its a-priori bound
    grows with the final time and refuses, over long horizons, steps that run fine; a step that fails
    later shows as a large error), answering at ``record_times(params)``."""
    import torch

    method = "pseudo-spectral CNAB2"
    first = float(navier_stokes.record_times(params)[0])
    rungs = []
    for n in (n for n in NAVIER_STOKES_GRIDS if n <= 2 * resolution):
        forcing = navier_stokes.forcing_field(n, params.forcing_amplitude)
        for dt in NAVIER_STOKES_STEPS:
            check = replace(params, solve_resolution=None, time_step=dt, final_time=first, record_every=first)
            if not _stable(lambda n=n, check=check: check.for_resolution(n)):
                continue

            def solve(
                p: navier_stokes.NavierStokesParameters,
                inputs: Mapping[str, np.ndarray],
                n=n,
                dt=dt,
                forcing=forcing,
            ) -> dict:
                w0 = np.asarray(inputs["w0"], dtype=np.float64)
                if w0.ndim != 3 or w0.shape[-1] != w0.shape[-2]:
                    raise SolverRefusal(f"w0 must have shape (batch, r, r), got {w0.shape}")
                start = torch.as_tensor(fourier_resample(w0, n, (-2, -1)), dtype=torch.float64)
                times = navier_stokes.record_times(p)
                w = navier_stokes.solve_navier_stokes(start, forcing, p.viscosity, dt, times).numpy()
                return {"w": fourier_resample(w, w0.shape[-1], (-2, -1))}

            settings = {"method": method, "grid": n, "time_step": dt}
            rungs.append(Rung(f"{method}, grid {n}, dt {dt:g}", settings, solve))
    return rungs
