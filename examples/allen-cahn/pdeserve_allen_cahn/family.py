"""The ``allen-cahn`` PDE family: phase separation from a random initial state, ``u0 -> u(T)``.

``u_t = eps^2 Lap(u) + u - u^3`` on the unit square with ``du/dn = 0``. The initial state ``u0`` is a
Gaussian random field (pdeserve's ``NeumannGaussianField``, scaled to a standard deviation ``amplitude``)
given at the nodes of the data grid; the answer is ``u(T)`` at the same nodes. Between nodes ``u0`` is
its bilinear interpolant, so the map from node values to node values is well defined at every
resolution, and the dataset's outputs are exactly the reference solve of its inputs.

The reference solve runs on a grid ``refinement`` times finer than the data grid (every data node is a
solve node) with the BDF2 step ``time_step``: see ``solver.py`` and the README for its accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pdeserve.datagen.families import FieldInfo, PdeFamily, Rung, two_solution_indicator
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.random_fields import NeumannGaussianField
from pdeserve_allen_cahn.solver import solve_on

INDICATOR_TIME_STEP = 0.1
"""BDF2 step of the indicator's cheaper solve (on the data grid itself)."""
LADDER_GRIDS = (17, 22, 32, 43, 64, 86, 127)
"""Solve grids of the ladder (nodes per side), each used with every step of ``LADDER_STEPS``."""
LADDER_STEPS = (0.4, 0.2, 0.1, 0.05)


@dataclass(frozen=True)
class AllenCahnParameters:
    """The dataset distribution and the reference solver's settings (recorded in the HDF5 attributes).

    Parameters
    ----------
    epsilon : float
        Interface parameter: ``u_t = eps^2 Lap(u) + u - u^3`` (interfaces about ``2 sqrt(2) eps`` wide).
    final_time : float
        ``T``, the time of the answer.
    alpha, tau : float
        Smoothness exponent and inverse length scale of the initial state's Gaussian field.
    amplitude : float
        Standard deviation (domain average) of the initial state.
    refinement : int
        The reference solve's grid has ``refinement (n - 1) + 1`` nodes per side for data on ``n``.
    time_step : float
        The reference solve's BDF2 step.
    """

    epsilon: float = 0.02
    final_time: float = 8.0
    alpha: float = 2.0
    tau: float = 8.0
    amplitude: float = 0.5
    refinement: int = 2
    time_step: float = 0.1

    def __post_init__(self) -> None:
        NeumannGaussianField(self.alpha, self.tau)  # validates alpha and tau
        for name in ("epsilon", "final_time", "amplitude", "time_step"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if int(self.refinement) != self.refinement or self.refinement < 1:
            raise ValueError(f"refinement must be a positive integer, got {self.refinement!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    def for_resolution(self, resolution: int) -> AllenCahnParameters:
        """These parameters, checked for data on ``resolution`` nodes per side (nothing depends on it)."""
        UnitSquareGrid(resolution)  # at least 3 nodes
        return self

    def solve_side(self, resolution: int) -> int:
        """Nodes per side of the reference solve for data on ``resolution``."""
        return self.refinement * (resolution - 1) + 1


def coordinates(params: AllenCahnParameters, resolution: int) -> dict[str, np.ndarray]:
    nodes = UnitSquareGrid(resolution).coordinates
    return {"x": nodes, "y": nodes}


def solve(params: AllenCahnParameters, u0: np.ndarray) -> np.ndarray:
    """The reference answer ``u(T)`` of ``(batch, n, n)`` initial states, on their nodes."""
    side = params.solve_side(u0.shape[-1])
    return solve_on(u0, side, params.epsilon, params.time_step, params.final_time)


def sample(
    params: AllenCahnParameters, resolution: int, rngs: Sequence[np.random.Generator]
) -> dict[str, np.ndarray]:
    """One initial state per generator on ``resolution`` nodes, and its reference answer (one batch)."""
    field = NeumannGaussianField(params.alpha, params.tau)
    grid = UnitSquareGrid(resolution)
    scale = params.amplitude / math.sqrt(field.average_variance())
    u0 = np.stack([scale * field.sample(grid, rng) for rng in rngs])
    return {"u0": u0, "u": solve(params, u0)}


def reference(params: AllenCahnParameters, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference answer of one sample (or a batch) on the inputs' own grid."""
    u0 = np.asarray(inputs["u0"], dtype=np.float64)
    single = u0.ndim == 2
    u = solve(params, u0[None] if single else u0)
    return {"u": u[0] if single else u}


def cheap(params: AllenCahnParameters, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The indicator's cheaper solve: on the data grid itself (no refinement), BDF2 step 0.1."""
    u0 = np.asarray(inputs["u0"], dtype=np.float64)
    u = solve_on(u0[None], u0.shape[-1], params.epsilon, INDICATOR_TIME_STEP, params.final_time)
    return {"u": u[0]}


def ladder(params: AllenCahnParameters, resolution: int) -> list[Rung]:
    """Cheaper classical settings: every grid of ``LADDER_GRIDS`` with every BDF2 step of
    ``LADDER_STEPS``, inputs and answers interpolated bilinearly; cheapest first (fewest unknown-steps)."""
    rungs = []
    for m in LADDER_GRIDS:
        for dt in LADDER_STEPS:

            def run(p: AllenCahnParameters, inputs: Mapping[str, np.ndarray], m=m, dt=dt) -> dict:
                u0 = np.asarray(inputs["u0"], dtype=np.float64)
                return {"u": solve_on(u0, m, p.epsilon, dt, p.final_time)}

            rungs.append(Rung(f"grid {m}, dt {dt:g}", {"grid": m, "time_step": dt}, run))
    return sorted(rungs, key=lambda r: r.settings["grid"] ** 2 / r.settings["time_step"])


ALLEN_CAHN = PdeFamily(
    name="allen-cahn",
    description="Allen-Cahn u_t = eps^2 Lap(u) + u - u^3 on (0,1)^2, du/dn = 0, u0 -> u(T) "
    "(scikit-fem; example plugin)",
    dims=("x", "y"),
    inputs=(FieldInfo("u0", "initial state, scaled Gaussian random field", ("x", "y")),),
    outputs=(FieldInfo("u", "state at the final time T", ("x", "y")),),
    boundary="neumann",
    grid="uniform node-centred grid on [0, 1]^2, boundary nodes included",
    boundary_conditions="neumann: du/dn = 0 on all four sides",
    scheme="bilinear (Q1) finite elements, lumped mass; linearly implicit BDF2 with extrapolated, "
    "stabilised reaction; u0 interpolated bilinearly onto a grid REFINEMENT times finer",
    solver="scikit-fem assembly, SuperLU (scipy.sparse.linalg.splu) factorised once per grid and step",
    parameters=AllenCahnParameters,
    coordinates=coordinates,
    sample=sample,
    reference=reference,
    option_help={
        "epsilon": "interface parameter eps of u_t = eps^2 Lap(u) + u - u^3",
        "final_time": "time T of the answer u(T)",
        "alpha": "smoothness exponent of the initial state's Gaussian field",
        "tau": "inverse length scale of the initial state's Gaussian field",
        "amplitude": "standard deviation of the initial state",
        "refinement": "the reference solve's grid is REFINEMENT times finer than the data grid",
        "time_step": "BDF2 step of the reference solve",
    },
    indicator=two_solution_indicator(cheap, name="two-solution-unrefined"),
    ladder=ladder,
)
