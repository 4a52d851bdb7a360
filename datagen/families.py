"""The PDE-family contract and its registry: every family, built-in or a plugin's, is one ``PdeFamily``.

A family couples a parameter dataclass (the dataset distribution, all recorded in the file), a batched
sampler ``(parameters, resolution, rngs) -> fields`` (one generator per sample, so a sample never depends
on its batch-mates), the coordinates of its dimensions, and a reference solver
``(parameters, inputs) -> outputs`` that the server uses to check a surrogate on demand. Optional hooks
give what checks and compares answers: an a-posteriori ``indicator`` (e.g. from a cheaper solve, see
:func:`two_solution_indicator`), a ``refine`` that improves an answer to a tolerance, a ``stepper`` for
time-dependent families (the coarse solve of the two-solution estimate and the rollout fallback) and a
``ladder`` of cheaper classical settings. A stable-step rule is a method of the parameter dataclass,
``with_stable_time_step(side)``, used where a family is solved on a grid finer than its data's.

Families are registered through the ``pdeserve.families`` entry-point group: each entry point names a
``PdeFamily`` object, and its distribution (name and version) is the family's :class:`FamilyOrigin`.
pdeserve registers its own four families (``builtin_families.py``) the same way, in its pyproject.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class FieldInfo:
    """A named field of a dataset.

    Parameters
    ----------
    name : str
        Variable name in the HDF5 file and in model inputs/outputs (e.g. ``"a"``).
    description : str
        What the field is, for humans and ``GetModel``.
    dims : tuple of str
        Dimensions of one sample, e.g. ``("x", "y")``, or ``("t", "x")`` for a trajectory.
    """

    name: str
    description: str
    dims: tuple[str, ...]


Boundary = Literal["periodic", "dirichlet", "neumann"]
"""Kind of boundary condition of a family, for code that adapts to it (e.g. operator padding)."""


Parameters = Any
"""A family's parameter dataclass instance."""
Fields = Mapping[str, np.ndarray]
"""One sample's fields keyed by name (no batch axis), or a batch's (leading sample axis)."""


@dataclass(frozen=True)
class FamilyOrigin:
    """The Python distribution that registers a family (``pdeserve`` for the built-ins).

    Parameters
    ----------
    distribution : str
        Distribution name, as ``pip install`` takes it.
    version : str
        Its installed version.
    """

    distribution: str
    version: str


@dataclass(frozen=True)
class Indicator:
    """An a-posteriori indicator of a steady family's answers, calibrated into an error estimate.

    Parameters
    ----------
    name : str
        Recorded in a model's calibration (e.g. ``preconditioned-residual``); a change of indicator
        needs a new calibration.
    score : callable
        ``score(parameters, inputs, outputs) -> float`` for one sample (no batch axis): larger when the
        answer is further from the solution.
    """

    name: str
    score: Callable[[Parameters, Fields, Fields], float]


# The paths of a refined answer (``Refined.path``).
REFINED, CLASSICAL = "refined", "classical"


@dataclass(frozen=True)
class Refined:
    """An answer improved by a family's ``refine`` hook.

    Parameters
    ----------
    outputs : dict of str to ndarray
        The answer, keyed by output name (one sample, no batch axis).
    path : str
        ``refined`` (an iterative solver from the proposed answer) or ``classical`` (a solve that
        ignores it).
    iterations : int
        Solver iterations (0 for a direct solve).
    residual : float
        Relative residual reached (0 for the reference solve itself).
    """

    outputs: dict[str, np.ndarray]
    path: str
    iterations: int
    residual: float


@dataclass(frozen=True)
class TimeStepper:
    """The classical solver of a time-dependent family, as its checks use it.

    Parameters
    ----------
    advance : callable
        ``advance(parameters, state, offsets) -> states``: the states a time ``offsets`` after ``state``
        (one sample, no batch axis), on ``state``'s grid; the classical answer of a rollout's fallback.
    coarse : callable
        ``coarse(parameters, state, offsets, side=None) -> states``: the same on the two-solution
        estimator's coarse grid (``side`` points; by default chosen from ``state``'s grid).
    """

    advance: Callable[[Parameters, np.ndarray, np.ndarray], np.ndarray]
    coarse: Callable[..., np.ndarray]


@dataclass(frozen=True)
class Rung:
    """One cheaper setting of a family's classical solver (a coarser grid, a larger step, a looser
    tolerance), for comparing a surrogate with the classical solver at equal accuracy.

    Parameters
    ----------
    label : str
        Short name for tables (e.g. ``grid 33``).
    settings : mapping
        The settings, as JSON values.
    solve : callable
        ``solve(parameters, inputs) -> outputs`` for a batch (leading sample axis), answers on the
        inputs' grid; an input it cannot take is a ``SolverRefusal`` (``datagen/errors.py``).
    batched : bool
        Whether ``solve`` treats a batch at once, cheaper per sample than one call per sample (False:
        it loops over the samples, so a benchmark times it per sample only).
    """

    label: str
    settings: Mapping[str, Any]
    solve: Callable[[Parameters, Fields], dict[str, np.ndarray]]
    batched: bool = True


@dataclass(frozen=True)
class PdeFamily:
    """A PDE family: its fields, grid, scheme and the functions that generate and solve it.

    Parameters
    ----------
    name : str
        CLI and file name of the family (``pdeserve datagen <name>``).
    description : str
        One line for ``datagen list``.
    dims : tuple of str
        Spatial dimension names, in array-axis order.
    inputs, outputs : tuple of FieldInfo
        Operator input and output fields.
    boundary : {"periodic", "dirichlet", "neumann"}
        Kind of boundary condition, machine-readable; ``boundary_conditions`` states it in full.
    grid, boundary_conditions, scheme, solver : str
        Recorded in the dataset attributes.
    parameters : type
        Frozen dataclass holding the distribution's parameters; its ``for_resolution(resolution)``
        validates them against the output resolution and fills resolution-dependent defaults.
    coordinates : callable
        ``coordinates(parameters, resolution) -> {dim: 1D array}`` for every dimension of every field.
    sample : callable or None
        ``sample(parameters, resolution, rngs) -> {field: array}`` draws and solves ``len(rngs)``
        instances (leading axis), each from its own generator (None: a family known only from data).
    reference : callable or None
        ``reference(parameters, inputs) -> {output: array}`` solves given inputs at their own resolution
        (None: no solver).
    option_help : mapping
        Help text of each parameter field, for the CLI.
    indicator : Indicator, optional
        Scores a steady family's answers (an error estimate needs one).
    refine : callable, optional
        ``refine(parameters, inputs, outputs, tolerance, max_iterations) -> Refined`` improves one
        sample's answer to a relative residual of ``tolerance``; without it a refinement is the
        reference solve.
    stepper : TimeStepper, optional
        A time-dependent family's solver as its two-solution estimate and rollout fallback use it.
    ladder : callable, optional
        ``ladder(parameters, resolution) -> [Rung, ...]``: cheaper (and finer) classical settings for
        answers at ``resolution``, coarsest solve grid first (the built-ins': ``ladders.py``).
    reference_refinement : int
        How many times as finely, in space and in time, a model's ledger solves the reference it measures
        every path against (``operators.validation.finer_reference``): 2 where the reference converges
        fast; more where it converges slowly, or the ledger promises errors the answers do not keep.
    origin : FamilyOrigin, optional
        The distribution that registered it (set by the registry).
    """

    name: str
    description: str
    dims: tuple[str, ...]
    inputs: tuple[FieldInfo, ...]
    outputs: tuple[FieldInfo, ...]
    boundary: Boundary
    grid: str
    boundary_conditions: str
    scheme: str
    solver: str
    parameters: type
    coordinates: Callable[[Any, int], dict[str, np.ndarray]]
    sample: Callable[[Any, int, Sequence[np.random.Generator]], dict[str, np.ndarray]] | None
    reference: Callable[[Any, Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None
    option_help: Mapping[str, str]
    indicator: Indicator | None = None
    refine: Callable[[Parameters, Fields, Fields, float, int], Refined] | None = None
    stepper: TimeStepper | None = None
    ladder: Callable[[Parameters, int], Sequence[Rung]] | None = None
    reference_refinement: int = 2
    origin: FamilyOrigin | None = None

    def __post_init__(self) -> None:
        refinement = self.reference_refinement
        if isinstance(refinement, bool) or not isinstance(refinement, int) or refinement < 2:
            raise ValueError(
                f"family {self.name!r}: reference_refinement must be an integer of at least 2 (a ledger's "
                f"reference finer than the family's own), got {refinement!r}"
            )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """Add one ``--option`` per parameter field, defaulting to the dataclass default."""
        for field in dataclasses.fields(self.parameters):
            kind = next(
                (t for name, t in (("str", str), ("int", int), ("float", float)) if name in str(field.type)),
                None,
            )
            if kind is None:
                raise TypeError(
                    f"parameter {field.name!r} of {self.name} is a {field.type}; command-line options "
                    "are str, int or float"
                )
            parser.add_argument(
                "--" + field.name.replace("_", "-"),
                type=kind,
                default=field.default,
                choices=field.metadata.get("choices"),
                help=self.option_help.get(field.name, field.name),
            )

    def state_times(self, parameters: Any, resolution: int) -> np.ndarray:
        """Times of a trajectory's states ``s_0, s(t_1), ..., s(t_N)``: the initial state at t = 0,
        then the recorded times (a steady family has only ``[0.0]``)."""
        recorded = self.coordinates(parameters, resolution).get("t", np.empty(0))
        return np.concatenate([[0.0], recorded])

    def parameters_from(self, values: Mapping[str, Any]) -> Any:
        """Build (and validate) the parameter dataclass from a mapping holding at least its fields."""
        names = {f.name for f in dataclasses.fields(self.parameters)}
        return self.parameters(**{k: v for k, v in values.items() if k in names})


def two_solution_indicator(
    coarse: Callable[[Parameters, Fields], Mapping[str, np.ndarray]], name: str = "two-solution"
) -> Indicator:
    """An indicator for a steady family from a cheaper solve of the same inputs: the relative L2
    distance between the answer and ``coarse(parameters, inputs)`` (both on the answer's grid, every
    output stacked). It estimates the answer's error when the cheap solve is much closer to the
    solution than the answer is; the calibration then measures how the two relate."""

    def score(params: Parameters, inputs: Fields, outputs: Fields) -> float:
        cheap = coarse(params, inputs)
        proposed = np.stack([np.asarray(outputs[k], dtype=np.float64) for k in sorted(cheap)])
        solved = np.stack([np.asarray(cheap[k], dtype=np.float64) for k in sorted(cheap)])
        norm = float(np.linalg.norm(solved))
        return float(np.linalg.norm(proposed - solved)) / norm if norm > 0 else float("inf")

    return Indicator(name, score)


ENTRY_POINT_GROUP = "pdeserve.families"


class UnknownFamilyError(KeyError):
    """No installed distribution registers a PDE family of this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class BrokenFamily:
    """An entry point of the group that could not be loaded (listed by ``datagen list``, never used)."""

    name: str
    origin: FamilyOrigin
    error: str


@dataclass(frozen=True)
class Registry:
    """The families every installed distribution registers, and the entry points that failed."""

    families: Mapping[str, PdeFamily]
    broken: tuple[BrokenFamily, ...]


# Options of `datagen NAME` and `retrain` themselves: a family parameter may not take one of these names.
COMMAND_OPTIONS = [
    "n",
    "resolution",
    "out",
    "seed",
    "workers",
    "ray_address",
    "chunk_size",
    "dtype",
    "overwrite",
    "quiet",
    "repo",
    "model",
    "epochs",
    "validation_samples",
    "lr",
    "from_scratch",
    "max_regression",
    "data",
    "device",
    "help",
]


def _load(entry: importlib.metadata.EntryPoint, origin: FamilyOrigin) -> PdeFamily:
    family = entry.load()
    if not isinstance(family, PdeFamily):
        raise TypeError(f"{entry.value} is a {type(family).__name__}, not a PdeFamily")
    if family.name != entry.name:
        raise ValueError(f"the entry point {entry.name!r} names a family called {family.name!r}")
    # Its options must build beside the commands' own, or every command line would fail to build.
    parser = argparse.ArgumentParser(add_help=False)
    for name in COMMAND_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"))
    try:
        family.add_options(parser)
    except argparse.ArgumentError as exc:
        raise ValueError(f"its options clash with datagen's own: {exc}") from None
    return dataclasses.replace(family, origin=origin)


# The distribution of pdeserve's own families: a plugin cannot take one of their names over.
BUILT_IN = "pdeserve"


@functools.cache
def registry() -> Registry:
    """Every family registered in the ``pdeserve.families`` entry-point group (read once per process).

    A plugin that fails to import, names something that is not a ``PdeFamily`` or has options that
    clash with the commands' own is reported in ``broken`` instead of breaking every other family. A
    name that pdeserve's own family has stays pdeserve's (the plugin's entry is refused); a name two
    plugins register is refused for both (which one a model meant cannot be told)."""
    families: dict[str, PdeFamily] = {}
    broken: list[BrokenFamily] = []
    claimed: dict[str, list[FamilyOrigin]] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        origin = FamilyOrigin(dist.name, dist.version) if dist is not None else FamilyOrigin("?", "?")
        claimed.setdefault(entry.name, []).append(origin)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        origin = FamilyOrigin(dist.name, dist.version) if dist is not None else FamilyOrigin("?", "?")
        owners = {o.distribution for o in claimed[entry.name]}
        if len(owners) > 1 and origin.distribution != BUILT_IN:
            reason = f"registered by more than one distribution: {', '.join(sorted(owners))}"
            broken.append(BrokenFamily(entry.name, origin, reason))
            continue
        try:
            families[entry.name] = _load(entry, origin)
        except Exception as exc:  # a plugin's import error must not take the other families down
            broken.append(BrokenFamily(entry.name, origin, f"{type(exc).__name__}: {exc}"))
    return Registry(dict(sorted(families.items())), tuple(broken))


def families() -> Mapping[str, PdeFamily]:
    """The installed families by name."""
    return registry().families


def get_family(name: str) -> PdeFamily:
    """The family called ``name``; ``UnknownFamilyError`` (a ``KeyError``) naming the known ones otherwise."""
    try:
        return families()[name]
    except KeyError:
        known = ", ".join(families()) or "none (is pdeserve installed? its families are entry points)"
        raise UnknownFamilyError(f"unknown PDE family {name!r}; known: {known}") from None
