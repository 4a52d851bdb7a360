"""pdeserve's own PDE families: Burgers, Darcy, Navier-Stokes and Helmholtz.

They are registered exactly as a plugin's would be (pyproject's ``pdeserve.families`` entry points name
the objects below), so nothing in pdeserve treats them as special.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pdeserve.datagen import burgers, darcy, helmholtz, indicators, ladders, navier_stokes, refinement
from pdeserve.datagen.families import FieldInfo, Indicator, PdeFamily, TimeStepper
from pdeserve.datagen.grids import UnitSquareGrid, periodic_coordinates


def _unit_square_coordinates(params: Any, resolution: int) -> dict[str, np.ndarray]:
    coords = UnitSquareGrid(resolution).coordinates
    return {"x": coords, "y": coords}


def _darcy_reference(
    params: darcy.DarcyParameters, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    a = np.asarray(inputs["a"], dtype=np.float64)
    return {"u": darcy.solve_darcy(a, params.forcing, UnitSquareGrid(a.shape[-1]))}


def _burgers_coordinates(params: burgers.BurgersParameters, resolution: int) -> dict[str, np.ndarray]:
    return {"t": burgers.record_times(params), "x": periodic_coordinates(resolution)}


def _burgers_reference(
    params: burgers.BurgersParameters, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    u0 = np.asarray(inputs["u0"], dtype=np.float64)[None]
    params = params.on_grid(u0.shape[-1])
    return {
        "u": burgers.solve_burgers(u0, params.viscosity, params.time_step, burgers.record_times(params))[0]
    }


def _torus_coordinates(
    params: navier_stokes.NavierStokesParameters, resolution: int
) -> dict[str, np.ndarray]:
    x = periodic_coordinates(resolution)
    return {"t": navier_stokes.record_times(params), "x": x, "y": x}


def _navier_stokes_reference(
    params: navier_stokes.NavierStokesParameters, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    return {"w": navier_stokes.navier_stokes_reference(params, inputs["w0"])}


def _helmholtz_reference(
    params: helmholtz.HelmholtzParameters, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    return {"u": helmholtz.helmholtz_reference(params, inputs["c"])}


BURGERS = PdeFamily(
    name="burgers",
    description="1D viscous Burgers u_t + (u^2/2)_x = nu u_xx, periodic on [0,1) (FNO benchmark)",
    dims=("x",),
    inputs=(FieldInfo("u0", "initial state, periodic Gaussian random field", ("x",)),),
    outputs=(FieldInfo("u", "state at the recorded times", ("t", "x")),),
    boundary="periodic",
    grid="uniform periodic grid x_i = i / n on [0, 1)",
    boundary_conditions="periodic",
    scheme="Fourier pseudo-spectral, 2/3-rule dealiasing, ETDRK4 (Cox-Matthews, Kassam-Trefethen)",
    solver="pdeserve.datagen.burgers.solve_burgers (scipy.fft)",
    parameters=burgers.BurgersParameters,
    coordinates=_burgers_coordinates,
    sample=burgers.burgers_batch,
    reference=_burgers_reference,
    option_help={
        "viscosity": "viscosity nu",
        "final_time": "time of the last stored state",
        "record_every": "store the state every this much time (unset: only the final state)",
        "time_step": "ETDRK4 step (unset: 1e-3, halved until stable; an unstable step is refused)",
        "solve_resolution": "points of the solver grid; stored fields are subsampled from it "
        "(a multiple of the resolution)",
        "sigma": "scale of the initial-state field: covariance sigma^2 (-Laplacian + tau^2)^-alpha",
        "tau": "inverse length scale of the initial-state field",
        "alpha": "smoothness exponent of the initial-state field",
    },
    stepper=TimeStepper(indicators.burgers_advance, indicators.burgers_coarse),
    ladder=ladders.burgers_ladder,
)

DARCY = PdeFamily(
    name="darcy",
    description="steady Darcy flow -div(a grad u) = f on (0,1)^2, u = 0 on the boundary (FNO benchmark)",
    dims=("x", "y"),
    inputs=(FieldInfo("a", "diffusion coefficient, from a Gaussian random field", ("x", "y")),),
    outputs=(FieldInfo("u", "pressure solution of -div(a grad u) = f", ("x", "y")),),
    boundary="dirichlet",
    grid="uniform node-centred grid on [0, 1]^2, boundary nodes included",
    boundary_conditions="dirichlet: u = 0 on all four sides",
    scheme="second-order 5-point finite differences, arithmetic-mean face coefficients",
    solver="QDLDL sparse LDL^T, symbolic factorisation reused across samples",
    parameters=darcy.DarcyParameters,
    coordinates=_unit_square_coordinates,
    sample=darcy.darcy_batch,
    reference=_darcy_reference,
    option_help={
        "alpha": "smoothness exponent of the Gaussian field",
        "tau": "inverse length scale of the Gaussian field",
        "coefficient": "piecewise: HIGH where the Gaussian field is >= 0, LOW elsewhere (benchmark); "
        "lognormal: exp of the scaled field, spanning LOW..HIGH within two standard deviations",
        "contrast": "coefficient levels HIGH/LOW",
        "forcing": "constant right-hand side f",
        "solve_resolution": "nodes per side of the solver grid; fields are subsampled from it "
        "((solve_resolution - 1) must be a multiple of (resolution - 1); unset: the output resolution)",
    },
    indicator=Indicator("preconditioned-residual", refinement.darcy_score),
    refine=refinement.refine_darcy,
    ladder=ladders.darcy_ladder,
    # The piecewise-constant coefficient makes the solution converge at first order: against a reference
    # k times as fine an answer shows (1 - 1/k) of its error (64 nodes: 0.009 at 2, 0.0135 at 8, against a
    # truth of 0.0155). 8 costs about 0.9 s per ledger sample.
    reference_refinement=8,
)

NAVIER_STOKES = PdeFamily(
    name="navier-stokes",
    description="2D incompressible Navier-Stokes, vorticity form, on the unit torus (FNO benchmark)",
    dims=("x", "y"),
    inputs=(FieldInfo("w0", "initial vorticity, periodic Gaussian random field", ("x", "y")),),
    outputs=(FieldInfo("w", "vorticity at the recorded times", ("t", "x", "y")),),
    boundary="periodic",
    grid="uniform periodic grid x_i = i / n on [0, 1)^2",
    boundary_conditions="periodic",
    scheme="Fourier pseudo-spectral, isotropic 2/3-rule dealiasing, Crank-Nicolson viscosity, "
    "second-order Adams-Bashforth advection and forcing (CNAB2, Heun start-up step; second order)",
    solver="pdeserve.datagen.navier_stokes.solve_navier_stokes (torch, batched, CUDA when present)",
    parameters=navier_stokes.NavierStokesParameters,
    coordinates=_torus_coordinates,
    sample=navier_stokes.navier_stokes_batch,
    reference=_navier_stokes_reference,
    option_help={
        "viscosity": "viscosity nu (benchmarks: 1e-3, 1e-4, 1e-5)",
        "time_step": "largest time step (an unstable step is refused before any work)",
        "final_time": "time of the last stored state",
        "record_every": "store the vorticity every this much time",
        "solve_resolution": "points per side of the solver grid; stored fields are subsampled from it "
        "(a multiple of the resolution; unset: the resolution)",
        "forcing_amplitude": "amplitude of f = A (sin(2 pi (x + y)) + cos(2 pi (x + y)))",
        "alpha": "smoothness exponent of the initial-vorticity field",
        "tau": "inverse length scale of the initial-vorticity field",
        "sigma": "scale of the initial-vorticity field",
    },
    stepper=TimeStepper(indicators.navier_stokes_advance, indicators.navier_stokes_coarse),
    ladder=ladders.navier_stokes_ladder,
)

HELMHOLTZ = PdeFamily(
    name="helmholtz",
    description="Helmholtz -Lap(u) - (omega/c)^2 u = 0 on (0,1)^2, variable wave speed c, Neumann data "
    "(de Hoop et al. 2022 benchmark)",
    dims=("x", "y"),
    inputs=(
        FieldInfo(
            "c", "wave speed c = speed_mean + speed_amplitude tanh(xi), xi a Gaussian field", ("x", "y")
        ),
    ),
    outputs=(FieldInfo("u", "excitation field solving the Helmholtz problem", ("x", "y")),),
    boundary="neumann",
    grid="uniform node-centred grid on [0, 1]^2, boundary nodes included",
    boundary_conditions="neumann: du/dn = 1 on the top edge where |x - source_center| <= "
    "source_width / 2, du/dn = 0 on the rest of the boundary",
    scheme="bilinear (Q1) finite elements on the node grid, 3x3 Gauss quadrature, wave speed "
    "interpolated bilinearly, Neumann data integrated exactly (second order)",
    solver="SuperLU sparse LU with threshold pivoting (scipy.sparse.linalg.splu); the matrix is "
    "symmetric indefinite",
    parameters=helmholtz.HelmholtzParameters,
    coordinates=_unit_square_coordinates,
    sample=helmholtz.helmholtz_batch,
    reference=_helmholtz_reference,
    option_help={
        "omega": "angular frequency; the local wavenumber is omega / c",
        "speed_mean": "wave speed c = SPEED_MEAN + SPEED_AMPLITUDE tanh(xi)",
        "speed_amplitude": "wave speed c = SPEED_MEAN + SPEED_AMPLITUDE tanh(xi) (below SPEED_MEAN)",
        "alpha": "smoothness exponent of the Gaussian field xi: covariance (-Laplacian + tau^2)^-alpha",
        "tau": "inverse length scale of the Gaussian field xi",
        "kl_modes": "Karhunen-Loeve modes of xi, lowest |k| first (0: every mode the solve grid resolves)",
        "source_center": "centre of the top-edge segment where du/dn = 1",
        "source_width": "length of the top-edge segment where du/dn = 1",
        "points_per_wavelength": "fewest solve-grid nodes per shortest wavelength 2 pi min(c) / omega",
        "solve_resolution": "nodes per side of the solver grid; fields are subsampled from it "
        "((solve_resolution - 1) must be a multiple of (resolution - 1); unset: the coarsest such grid "
        "with --points-per-wavelength nodes per wavelength, the resolution itself at 101)",
    },
    indicator=Indicator("relative-residual", refinement.helmholtz_score),
    refine=refinement.refine_helmholtz,
    ladder=ladders.helmholtz_ladder,
)
