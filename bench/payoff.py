"""When does a surrogate pay off? Its cost against the best classical solver's at equal accuracy.

Usage: ``python bench/payoff.py [--quick] [--families darcy,burgers,navier-stokes,helmholtz,allen-cahn]
[--target HOST:PORT] [--out bench/results/payoff.json] [--img-dir docs/img]``.

Per family and per output resolution ``r``, on the same fresh samples (root seed ``--seed``, not any
training seed): every method gets the operator's input at ``r`` and answers at ``r``; its error is the
relative L2 (``operators.evaluation.relative_l2``, per sample, then the mean over samples) against a
fine reference, the family's own generator run at ``reference_resolution`` (and a small time step)
and subsampled to ``r``.

The classical side is a cost-accuracy curve: the rungs of the family's ``ladder`` hook (the built-ins':
``datagen/ladders.py``, the example plugin ``allen-cahn``'s own), those on the plan's solve grids and time
steps; the benchmark holds no copy of a solver's settings. A rung solves on its grid and answers on ``r``
(the input interpolated onto the solve grid and the answer back: bilinear on the node grids of Darcy and
Helmholtz, Fourier on the periodic grids of Burgers and Navier-Stokes), and for the time-dependent
families every stable time step of the ladder. Darcy's ladder has the sparse direct LDL^T solve and
conjugate gradients preconditioned by smoothed-aggregation AMG (pyamg) at two tolerances.
Each point is the median wall time per sample (batch 1; the batched rungs also report their per-sample
time in one batch of all samples) and the mean error. The curve is the Pareto front of the points: the
cheapest way to reach each error.

The surrogate is the bundled model when ``models/`` has one for the family, otherwise an FNO trained
here with ``operators.training.train`` on data from ``datagen.dataset.write_dataset`` (both timed).
Its cost is the in-process ``Surrogate.predict`` time per sample at batch 1 and at its best batch
size, and through gRPC with ``--target`` (models the server holds only). Equal accuracy: the classical
front's time at the surrogate's error, interpolated linearly in log(error)-log(time); outside the
front's range the nearest end point bounds it (flagged). Break-even solves:
``(t_generate + t_train) / (t_classical - t_surrogate)`` when positive, else ``"never"``.
Both sides run on ``--torch-threads`` (default 1) torch threads and one BLAS thread, interleaved per
sample. Writes JSON and one PNG per family (error against cost, log-log).
"""

from __future__ import annotations

import os

# One BLAS thread for every path: on a shared 2-core machine idle BLAS threads spin and add noise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import itertools
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import save_figure, write_results

from pdeserve.datagen import burgers, darcy, helmholtz, navier_stokes
from pdeserve.datagen.dataset import GenerationRequest, LoadedDataset, load_dataset, write_dataset
from pdeserve.datagen.families import PdeFamily, families, get_family
from pdeserve.datagen.ladders import ladder_parameters
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.pairs import operator_pairs
from pdeserve.operators.registry import get_architecture
from pdeserve.operators.repository import ModelRepository
from pdeserve.operators.surrogate import Surrogate, load_model
from pdeserve.operators.training import train

# Solves a batch of start states (sample, *grid r) into outputs (sample, channel, *grid r).
SolveFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Training:
    """How to train a surrogate here when no bundled one exists.

    Parameters
    ----------
    samples : int
        Size of the generated dataset (10% held out by the trainer).
    resolution : int
        Grid side of the dataset and the training.
    epochs, batch_size : int
        Optimisation length and batch.
    arguments : dict
        FNO arguments over the registry's defaults for the grid.
    """

    samples: int
    resolution: int
    epochs: int
    batch_size: int
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """One family's benchmark.

    Parameters
    ----------
    family : str
        Family name in ``datagen.families``.
    parameters : dataclass instance
        The distribution (a bundled model's card overrides it with its own).
    resolutions : tuple of int
        Output grid sides compared.
    reference_resolution : int
        Solve grid of the reference; every resolution must nest in it.
    reference_time_step : float or None
        Time step of the reference (time-dependent families).
    samples : int
        Fresh samples per resolution.
    grids : dict
        Classical solve grids per resolution.
    time_steps : tuple of float
        Time-step ladder of the classical solver (unstable steps are skipped).
    model : str
        Name of the bundled model to use when ``models/`` holds it.
    training : Training
        Training when there is no bundled model.
    """

    family: str
    parameters: Any
    resolutions: tuple[int, ...]
    reference_resolution: int
    reference_time_step: float | None
    samples: int
    grids: dict[int, tuple[int, ...]]
    time_steps: tuple[float, ...]
    model: str
    training: Training
    reference_overrides: dict[str, Any] | None = None
    """Parameters of the reference solve, for a family without ``solve_resolution`` (a plugin's)."""


@dataclass(frozen=True)
class Method:
    """A classical configuration: a method on a solve grid (and with a time step)."""

    method: str
    grid: int
    time_step: float | None
    solve: SolveFn
    batched: bool


@dataclass(frozen=True)
class Point:
    """A measured classical configuration.

    Parameters
    ----------
    seconds : float
        Median wall time per sample, one sample per call.
    batched_seconds : float or None
        Wall time per sample of one call on all samples (batched solvers only).
    error : float
        Mean relative L2 error against the reference.
    """

    method: str
    grid: int
    time_step: float | None
    seconds: float
    batched_seconds: float | None
    error: float

    @property
    def best_seconds(self) -> float:
        return min(self.seconds, self.batched_seconds or math.inf)


@dataclass(frozen=True)
class SurrogateCost:
    """A surrogate's error and cost on one resolution's samples.

    Parameters
    ----------
    error : float
        Mean relative L2 against the reference.
    batch1_seconds : float
        Median ``predict`` time for one sample.
    best_batch_seconds, best_batch : float, int
        Lowest time per sample over the batch sizes tried, and that batch size.
    grpc_batch1_seconds : float or None
        Median ``Solve`` round trip for one sample through ``--target`` (None: not measured).
    """

    error: float
    batch1_seconds: float
    best_batch_seconds: float
    best_batch: int
    grpc_batch1_seconds: float | None


@dataclass(frozen=True)
class EqualAccuracy:
    """The classical front's time at the surrogate's error and what it implies.

    Parameters
    ----------
    classical_seconds : float
        Front time at the surrogate's error (for its batch-1 or best-batch comparison).
    bound : str
        ``"interpolated"``, or ``"upper"`` when the surrogate is less accurate than the front's cheapest
        point (whose time then bounds the classical time from above), or ``"lower"`` when it is more
        accurate than every classical point (the most accurate one's time bounds it from below).
    speedup : float
        ``classical_seconds / surrogate seconds`` (< 1: the classical solver is faster).
    break_even : float or str
        Solves after which generating the data and training have paid, or ``"never"``.
    """

    surrogate_seconds: float
    classical_seconds: float
    bound: str
    speedup: float
    break_even: float | str


# ----------------------------------------------------------------------------------------------------
# Classical methods: the rungs of each family's ladder hook (the built-ins': datagen/ladders.py)


def ladder_methods(
    family: PdeFamily,
    params: Any,
    r: int,
    grids: Sequence[int] | None,
    steps: Sequence[float],
    horizon: np.ndarray,
) -> list[Method]:
    """The rungs of a family's ``ladder`` hook on ``grids`` (None: every grid) and, for a time-dependent
    rung, ``steps`` (empty: every step); a rung solves a batch of start states per call."""
    methods, name = [], family.inputs[0].name
    rung_params = ladder_parameters(params, horizon)
    for rung in family.ladder(rung_params, r):
        grid, step = int(rung.settings.get("grid", r)), rung.settings.get("time_step")
        if (grids is not None and grid not in grids) or (steps and step is not None and step not in steps):
            continue

        def solve(start: np.ndarray, rung=rung) -> np.ndarray:
            outputs = rung.solve(rung_params, {name: start})
            return np.stack([outputs[f.name] for f in family.outputs], axis=1)

        method = rung.settings.get("method", f"{family.name} ladder")
        methods.append(Method(method, grid, step, solve, rung.batched))
    return methods


def classical_methods(plan: Plan, params: Any, r: int, times: np.ndarray) -> list[Method]:
    family = get_family(plan.family)
    return ladder_methods(family, params, r, plan.grids.get(r), plan.time_steps, times)


# ----------------------------------------------------------------------------------------------------
# Fresh samples and their reference


@dataclass(frozen=True)
class Samples:
    """The fresh samples of one resolution in a surrogate's layout.

    Parameters
    ----------
    x, y : ndarray
        ``(sample, channel, *grid)`` operator inputs and reference outputs.
    start : ndarray
        ``(sample, *grid)``: the state a classical solver starts from (the last input channel).
    horizon : ndarray
        Times of the output channels after ``start`` (empty for a steady family).
    input_names : list of str
        The surrogate's input names, one per channel of ``x``.
    """

    x: np.ndarray
    y: np.ndarray
    start: np.ndarray
    horizon: np.ndarray
    input_names: list[str]


def reference_parameters(plan: Plan, params: Any) -> Any:
    """``params`` solved on the reference grid (and with the reference time step)."""
    if plan.reference_overrides is not None:
        return replace(params, **plan.reference_overrides).for_resolution(plan.reference_resolution)
    fine = replace(params, solve_resolution=plan.reference_resolution)
    if plan.reference_time_step is not None:
        fine = replace(fine, time_step=plan.reference_time_step)
    return fine.for_resolution(plan.reference_resolution)


def subsample(values: np.ndarray, family: PdeFamily, fine: int, r: int) -> np.ndarray:
    """The nested nodes of side ``r`` of fields on the ``fine`` grid (last ``ndim`` axes)."""
    stride = fine // r if family.boundary == "periodic" else (fine - 1) // (r - 1)
    index = (Ellipsis, *([slice(None, None, stride)] * len(family.dims)))
    return values[index]


def draw(plan: Plan, params: Any, seed: int) -> dict[str, np.ndarray]:
    """The fresh samples solved on the reference grid, at its resolution."""
    family = get_family(plan.family)
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, i])) for i in range(plan.samples)]
    return family.sample(reference_parameters(plan, params), plan.reference_resolution, rngs)


def samples_at(
    plan: Plan, params: Any, fields: dict[str, np.ndarray], r: int, surrogate: Surrogate
) -> Samples:
    family = get_family(plan.family)
    attrs = {
        "pde": family.name,
        "parameters_json": json.dumps(params.for_resolution(r).as_dict()),
        "input_fields": [f.name for f in family.inputs],
        "output_fields": [f.name for f in family.outputs],
    }
    coarse = {k: subsample(v, family, plan.reference_resolution, r) for k, v in fields.items()}
    data = LoadedDataset(
        attrs, {k: coarse[k] for k in attrs["input_fields"]}, {k: coarse[k] for k in attrs["output_fields"]}
    )
    pairs = operator_pairs(data, surrogate.card.time_map)
    horizon = np.empty(0)
    if pairs.time_map is not None:
        k, m = pairs.time_map.input_steps, pairs.time_map.output_steps
        states = family.state_times(data.parameters, r)
        horizon = states[k : k + m] - states[k - 1]
    x = pairs.x.astype(np.float64)
    return Samples(x, pairs.y.astype(np.float64), x[:, -1], horizon, surrogate.input_names)


def mean_error(prediction: np.ndarray, reference: np.ndarray) -> float:
    return float(
        np.mean([relative_l2(prediction[i : i + 1], reference[i : i + 1]) for i in range(len(reference))])
    )


# ----------------------------------------------------------------------------------------------------
# Timing


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def measure(
    methods: list[Method], surrogate: Surrogate, samples: Samples, batches: Sequence[int]
) -> tuple[list[Point], SurrogateCost]:
    """Every classical method and the surrogate on every sample, one sample per call, in an order
    rotated per sample (so drifts in machine speed hit every path); then the batched calls."""
    n = len(samples.y)
    one_sample = [lambda i, m=m: m.solve(samples.start[i : i + 1]) for m in methods]

    def predict(x: np.ndarray) -> np.ndarray:
        return surrogate.forward(
            surrogate.validate(
                dict(zip(samples.input_names, x.transpose(1, 0, *range(2, x.ndim)), strict=True))
            )[0]
        )

    paths = [*one_sample, lambda i: predict(samples.x[i : i + 1])]
    for path in paths:  # warm-up: factorisation patterns, FFT plans, allocator
        path(0)
    seconds = np.zeros((len(paths), n))
    answers: list[list[np.ndarray]] = [[None] * n for _ in paths]
    for i in range(n):
        order = np.roll(np.arange(len(paths)), i)
        for p in order:
            seconds[p, i], answers[p][i] = timed(lambda p=p, i=i: paths[p](i))
    batched = {}
    for p, method in enumerate(methods):
        if method.batched:
            batched[p] = timed(lambda m=method: m.solve(samples.start))[0] / n
    points = [
        Point(
            m.method,
            m.grid,
            m.time_step,
            float(np.median(seconds[p])),
            batched.get(p),
            mean_error(np.concatenate(answers[p]), samples.y),
        )
        for p, m in enumerate(methods)
    ]
    per_sample = {}
    for b in batches:
        x = np.concatenate([samples.x] * math.ceil(b / n))[:b]
        predict(x)
        per_sample[b] = min(timed(lambda x=x: predict(x))[0] for _ in range(3)) / b
    best = min(per_sample, key=per_sample.get)
    cost = SurrogateCost(
        error=mean_error(np.concatenate(answers[-1]), samples.y),
        batch1_seconds=float(np.median(seconds[-1])),
        best_batch_seconds=per_sample[best],
        best_batch=best,
        grpc_batch1_seconds=None,
    )
    return points, cost


def grpc_seconds(target: str, model: str, samples: Samples, repeats: int = 3) -> float | None:
    """Median ``Solve`` round trip of one sample, or None when the server does not hold ``model``."""
    from pdeserve.serving.client import SolverClient

    with SolverClient(target) as client:
        if model not in {m.name for m in client.list_models()}:
            return None
        times = []
        for i in range(len(samples.x)):
            inputs = {name: samples.x[i, c] for c, name in enumerate(samples.input_names)}
            client.solve(model, inputs)
            times.append(
                min(timed(lambda inputs=inputs: client.solve(model, inputs))[0] for _ in range(repeats))
            )
    return float(np.median(times))


# ----------------------------------------------------------------------------------------------------
# Equal accuracy


def front(points: Sequence[Point], cost: Callable[[Point], float], trivial: float = 1.0) -> list[Point]:
    """The Pareto front: points sorted by ``cost`` whose error is below every cheaper point's. An
    answer no more accurate than a trivial one (``trivial``: the error of answering zero, 1, or of
    answering the samples' mean, if lower) has no skill: it is not on the front."""
    out: list[Point] = []
    for point in sorted(points, key=cost):
        if point.error < min(trivial, out[-1].error if out else trivial):
            out.append(point)
    return out


def classical_time_at(
    curve: Sequence[Point], error: float, cost: Callable[[Point], float]
) -> tuple[float, str]:
    """The front's time at ``error`` (log-log interpolation) and whether it is a bound."""
    if error >= curve[0].error:
        return cost(curve[0]), "upper"
    if error < curve[-1].error:
        return cost(curve[-1]), "lower"
    for lo, hi in itertools.pairwise(curve):
        if hi.error <= error <= lo.error:
            w = math.log(lo.error / error) / math.log(lo.error / hi.error)
            return math.exp((1 - w) * math.log(cost(lo)) + w * math.log(cost(hi))), "interpolated"
    raise AssertionError("unreachable: the front's errors decrease")


def equal_accuracy(
    points: Sequence[Point],
    cost: Callable[[Point], float],
    error: float,
    seconds: float,
    overhead: float,
    trivial: float = 1.0,
) -> EqualAccuracy:
    """The surrogate (``error``, ``seconds`` per answer, ``overhead`` seconds of data generation and
    training) against the front of ``points`` under ``cost``.

    A surrogate no more accurate than the trivial answer (error ``trivial``, see ``front``) has no
    skill: speedup 0, it never pays. With skill but no classical point with skill, the costliest point
    bounds the classical time from below."""
    if error >= trivial:
        return EqualAccuracy(seconds, math.nan, "no skill", 0.0, "never")
    curve = front(points, cost, trivial)
    if curve:
        classical, bound = classical_time_at(curve, error, cost)
    else:
        classical, bound = max(cost(p) for p in points), "lower"
    saved = classical - seconds
    return EqualAccuracy(
        seconds, classical, bound, classical / seconds, overhead / saved if saved > 0 else "never"
    )


# ----------------------------------------------------------------------------------------------------
# Surrogates


@dataclass(frozen=True)
class Provenance:
    """Where a surrogate came from and what it cost before its first answer.

    Parameters
    ----------
    source : str
        ``"bundled models/NAME vV"`` or ``"trained here"``.
    generation_seconds, training_seconds : float
        Data generation and training wall time (a bundled model's generation time is estimated as its
        sample count times the measured per-sample generation time; its training time is its card's).
    note : str
        How the times were obtained.
    """

    source: str
    name: str
    training_resolution: int
    generation_seconds: float
    training_seconds: float
    note: str


def bundled(repo: Path, plan: Plan) -> Surrogate | None:
    if not (repo / plan.model).is_dir() or not ModelRepository(repo).versions(plan.model):
        return None
    return load_model(repo, plan.model)


def generation_estimate(plan: Plan, params: Any, surrogate: Surrogate) -> float:
    """Per-sample generation time at the model's training resolution, measured, times its sample count."""
    family = get_family(plan.family)
    side = surrogate.card.training_resolution[-1]
    rngs = [np.random.default_rng(np.random.SeedSequence([1, i])) for i in range(3)]
    family.sample(params.for_resolution(side), side, rngs[:1])
    seconds = timed(lambda: family.sample(params.for_resolution(side), side, rngs))[0] / len(rngs)
    return seconds * surrogate.card.dataset.n_samples


def trained(plan: Plan, params: Any, folder: Path) -> tuple[Surrogate, Provenance]:
    spec = plan.training
    family = get_family(plan.family)
    request = GenerationRequest(family, params, spec.samples, spec.resolution, seed=0)
    generation, path = timed(lambda: write_dataset(request, folder / f"{plan.family}.h5", progress=False))
    architecture = get_architecture("fno")
    settings = architecture.training_settings(epochs=spec.epochs, batch_size=spec.batch_size, device="cpu")
    training, (surrogate, metrics) = timed(
        lambda: train(load_dataset(path), "fno", spec.arguments, settings, progress=False)
    )
    note = (
        f"trained here: {spec.samples} samples at {spec.resolution}, FNO {spec.arguments}, {spec.epochs} "
        f"epochs; held-out relative L2 {metrics['test_relative_l2']:.3g}"
    )
    return surrogate, Provenance("trained here", "", spec.resolution, generation, training, note)


def surrogate_for(plan: Plan, repo: Path, folder: Path) -> tuple[Surrogate, Any, Provenance]:
    """The bundled model when there is one (with its own PDE parameters), else one trained here."""
    family = get_family(plan.family)
    model = bundled(repo, plan)
    if model is None:
        surrogate, provenance = trained(plan, plan.parameters, folder)
        return surrogate, plan.parameters, provenance
    params = family.parameters_from(model.card.pde_parameters)
    if "solve_resolution" in {f.name for f in dataclasses.fields(params)}:
        params = replace(params, solve_resolution=None)
    provenance = Provenance(
        f"bundled {repo.name}/{plan.model} v{model.version}",
        plan.model,
        model.card.training_resolution[-1],
        generation_estimate(plan, params, model),
        float(model.card.metrics.get("train_seconds", float("nan"))),
        f"generation: {model.card.dataset.n_samples} samples x the per-sample time measured here; "
        "training: the card's train_seconds (its training machine)",
    )
    return model, params, provenance


# ----------------------------------------------------------------------------------------------------
# Plans


def plans(quick: bool) -> list[Plan]:
    fno1d = {"n_modes": [16], "hidden_channels": 32, "n_layers": 4}
    fno2d = {"n_modes": [12, 12], "hidden_channels": 24, "n_layers": 4}
    tiny1d = {"n_modes": [8], "hidden_channels": 8, "n_layers": 2}
    tiny2d = {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 2}
    if quick:
        return [
            Plan(
                "darcy",
                darcy.DarcyParameters(),
                (17, 33),
                65,
                None,
                2,
                {17: (9, 17, 33), 33: (9, 17, 33)},
                (),
                "darcy-fno",
                Training(16, 17, 2, 8, tiny2d),
            ),
            Plan(
                "burgers",
                burgers.BurgersParameters(solve_resolution=256),
                (32, 64),
                256,
                None,
                2,
                {32: (16, 32), 64: (16, 32, 64)},
                (1e-3, 1e-2, 5e-2),
                "burgers-fno",
                Training(16, 64, 2, 8, tiny1d),
            ),
            Plan(
                "navier-stokes",
                navier_stokes.NavierStokesParameters(final_time=0.5, record_every=0.25, time_step=1e-2),
                (16, 32),
                64,
                2e-3,
                2,
                {16: (8, 16), 32: (16, 32)},
                (5e-3, 1e-2),
                "ns-fno",
                Training(12, 16, 2, 4, tiny2d),
            ),
            Plan(
                "helmholtz",
                helmholtz.HelmholtzParameters(omega=100.0),
                (17, 33),
                65,
                None,
                2,
                {17: (17, 33), 33: (17, 33)},
                (),
                "helmholtz-fno",
                Training(12, 33, 2, 4, tiny2d),
            ),
        ]
    return [
        Plan(
            "darcy",
            darcy.DarcyParameters(),
            (64, 127),
            505,
            None,
            8,
            {64: (17, 22, 33, 43, 64, 127, 253), 127: (17, 22, 33, 43, 64, 127, 253)},
            (),
            "darcy-fno",
            Training(400, 64, 20, 20, fno2d),
        ),
        Plan(
            "burgers",
            burgers.BurgersParameters(solve_resolution=1024),
            (128, 256),
            4096,
            None,
            16,
            {128: (16, 32, 64, 128), 256: (16, 32, 64, 128, 256)},
            (1e-3, 5e-3, 2e-2, 5e-2, 0.1, 0.25),
            "burgers-fno",
            Training(500, 256, 60, 20, fno1d),
        ),
        Plan(
            "navier-stokes",
            navier_stokes.NavierStokesParameters(final_time=5.0, record_every=1.0, time_step=1e-3),
            (32, 64),
            128,
            5e-4,
            6,
            {32: (8, 16, 32, 64), 64: (8, 16, 32, 64)},
            (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2),
            "ns-fno",
            Training(300, 32, 50, 10, fno2d),
        ),
        Plan(
            "helmholtz",
            helmholtz.HelmholtzParameters(),
            (51, 101),
            401,
            None,
            6,
            {51: (51, 101, 201), 101: (51, 101, 151, 201, 301)},
            (),
            "helmholtz-fno",
            Training(200, 101, 8, 10, fno2d),
        ),
    ]


BUILTIN_FAMILIES = ("darcy", "burgers", "navier-stokes", "helmholtz")


def plugin_plans(quick: bool) -> list[Plan]:
    """The example plugin family's plan (``examples/allen-cahn``), when it is installed.

    Its classical side is the family's ``ladder`` hook (grids 17 ... 127, BDF2 steps 0.05 ... 0.4); the
    reference is its own solve refined twice (a 253-node grid for the 127-node samples) with a step of
    0.05. Out of ``--quick``'s default families (the suite checks the built-ins'): run it with
    ``--quick --families allen-cahn`` (about 20 s)."""
    if "allen-cahn" not in families():
        return []
    params = get_family("allen-cahn").parameters()
    fno2d = {"n_modes": [16, 16], "hidden_channels": 24, "n_layers": 4}
    if quick:
        return [
            Plan(
                "allen-cahn",
                params,
                (17, 33),
                33,
                None,
                2,
                {17: (17, 22, 32), 33: (17, 22, 32)},
                (),
                "allen-cahn-fno",
                Training(16, 17, 2, 8, {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 2}),
                {"refinement": 2},
            )
        ]
    return [
        Plan(
            "allen-cahn",
            params,
            (64, 127),
            127,
            None,
            8,
            {},
            (),
            "allen-cahn-fno",
            Training(400, 64, 40, 16, fno2d),
            {"refinement": 2, "time_step": 0.05},
        )
    ]


# ----------------------------------------------------------------------------------------------------
# Report


def as_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "solve"
        }
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot(family: str, rows: list[dict], path: Path) -> None:
    """Error against cost per sample (log-log): classical points, their front, the surrogate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.6))
    for k, row in enumerate(rows):
        colour = f"C{k}"
        points, curve, surrogate = row["points"], row["front"], row["surrogate"]
        axes.scatter(
            [p.best_seconds for p in points], [p.error for p in points], s=10, color=colour, alpha=0.3
        )
        axes.plot(
            [p.best_seconds for p in curve],
            [p.error for p in curve],
            "-",
            color=colour,
            label=f"classical front, r = {row['resolution']}",
        )
        axes.scatter(
            [surrogate.batch1_seconds],
            [surrogate.error],
            marker="o",
            s=60,
            color=colour,
            edgecolor="black",
            label=f"surrogate batch 1, r = {row['resolution']}",
        )
        axes.scatter(
            [surrogate.best_batch_seconds],
            [surrogate.error],
            marker="*",
            s=110,
            color=colour,
            edgecolor="black",
            label=f"surrogate batch {surrogate.best_batch}, r = {row['resolution']}",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("wall time per sample [s] (2-core CPU VM, 1 thread)")
    axes.set_ylabel("relative L2 error vs fine reference")
    axes.set_title(f"{family}: cost at equal accuracy")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    save_figure(figure, path)


def describe(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


BOUND_MARK = {"upper": "<= ", "lower": ">= ", "interpolated": "", "no skill": ""}
BREAK_EVEN_MARK = {"upper": ">= ", "lower": "<= ", "interpolated": "", "no skill": ""}


def describe_point(point: dict) -> str:
    step = f", dt {point['time_step']:g}" if point["time_step"] else ""
    batched = f" / {1e3 * point['batched_seconds']:.3g}" if point["batched_seconds"] else ""
    return (
        f"{point['method']}, grid {point['grid']}{step}: {point['error']:.2g} in "
        f"{1e3 * point['seconds']:.3g}{batched} ms"
    )


def cheapest_as_accurate(row: dict) -> str:
    """The cheapest measured classical configuration at least as accurate as the surrogate."""
    error = row["surrogate"]["error"]
    # A configuration that blew up has no error (JSON null): never as accurate.
    good = [p for p in row["points"] if p["error"] is not None and p["error"] <= error]
    if not good:
        return "none"
    return describe_point(min(good, key=lambda p: min(p["seconds"], p["batched_seconds"] or math.inf)))


def verdict(equal: dict, key: str) -> str:
    value = equal[key]
    if equal["bound"] == "no skill":
        return "no skill" if key == "speedup" else "never"
    if isinstance(value, str):
        return value
    marks = BOUND_MARK if key != "break_even" else BREAK_EVEN_MARK
    return f"{marks[equal['bound']]}{value:.3g}"


def classical_ms(equal: dict) -> str:
    seconds = equal["classical_seconds"]
    return "-" if seconds is None else f"{BOUND_MARK[equal['bound']]}{1e3 * seconds:.3g}"


def table_row(family: str, row: dict) -> str:
    """One Markdown row; a bound (the surrogate's error outside the classical front) is marked."""
    s, b1, best = row["surrogate"], row["batch1"], row["best_batch"]
    grpc = "" if s["grpc_batch1_seconds"] is None else f", gRPC {1e3 * s['grpc_batch1_seconds']:.3g}"
    return (
        f"| {family} | {row['resolution']} | {s['error']:.3g} | {cheapest_as_accurate(row)} "
        f"| {classical_ms(b1)} / {classical_ms(best)} "
        f"| {1e3 * s['batch1_seconds']:.3g} / {1e3 * s['best_batch_seconds']:.3g} ({s['best_batch']}){grpc} "
        f"| {verdict(b1, 'speedup')} / {verdict(best, 'speedup')} "
        f"| {verdict(b1, 'break_even')} / {verdict(best, 'break_even')} |"
    )


def print_table(results: dict[str, dict]) -> None:
    print(
        "\n| family | r | surrogate error | cheapest classical at least as accurate (batch 1 / batched) "
        "| classical ms at equal error, batch 1 / best | surrogate ms, batch 1 / best (batch) "
        "| speedup, batch 1 / best | break-even solves, batch 1 / best |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for family, result in results.items():
        for row in result["resolutions"]:
            print(table_row(family, row))
    print()
    for family, result in results.items():
        p = result["surrogate"]
        print(
            f"- {family}: {p['source']}; generation {p['generation_seconds']:.0f} s, training "
            f"{p['training_seconds']:.0f} s ({p['note']}); section {result['seconds']:.0f} s"
        )


def run_family(plan: Plan, args: argparse.Namespace, folder: Path) -> dict:
    started = time.perf_counter()
    surrogate, params, provenance = surrogate_for(plan, Path(args.model_repo), folder)
    fields = draw(plan, params, args.seed)
    overhead = provenance.generation_seconds + provenance.training_seconds
    rows = []
    for r in plan.resolutions:
        samples = samples_at(plan, params, fields, r, surrogate)
        methods = classical_methods(plan, params.for_resolution(r), r, samples.horizon)
        points, cost = measure(methods, surrogate, samples, args.batches)
        if args.target and provenance.name:
            cost = replace(cost, grpc_batch1_seconds=grpc_seconds(args.target, provenance.name, samples))
        # The trivial answer: zero (error 1) or the samples' mean field, whichever is more accurate.
        trivial = min(1.0, mean_error(np.broadcast_to(samples.y.mean(axis=0), samples.y.shape), samples.y))
        rows.append(
            {
                "resolution": r,
                "trivial_error": trivial,
                "points": points,
                "front": front(points, lambda p: p.best_seconds, trivial),
                "surrogate": cost,
                "batch1": equal_accuracy(
                    points, lambda p: p.seconds, cost.error, cost.batch1_seconds, overhead, trivial
                ),
                "best_batch": equal_accuracy(
                    points, lambda p: p.best_seconds, cost.error, cost.best_batch_seconds, overhead, trivial
                ),
            }
        )
        print(f"{plan.family} r={r}: surrogate {cost.error:.3g}, {len(points)} classical points", flush=True)
    if args.img_dir:
        plot(plan.family, rows, Path(args.img_dir) / f"payoff-{plan.family}.png")
    result = {
        "parameters": params.as_dict(),
        "reference_resolution": plan.reference_resolution,
        "reference_time_step": plan.reference_time_step,
        "samples": plan.samples,
        "surrogate": provenance,
        "resolutions": rows,
        "seconds": time.perf_counter() - started,
    }
    return as_json(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the test (well under a minute)")
    parser.add_argument(
        "--families",
        help="comma-separated (default: the four built-ins, and with no --quick the installed example "
        "plugin's allen-cahn)",
    )
    parser.add_argument("--seed", type=int, default=20261203, help="root seed of the fresh samples")
    parser.add_argument("--model-repo", default="models")
    parser.add_argument("--target", help="HOST:PORT of a pdeserve server: also time Solve through gRPC")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads of both sides")
    parser.add_argument("--out", help="JSON (default bench/results/payoff.json; --quick: payoff-quick.json)")
    parser.add_argument("--img-dir", help="PNG folder (default docs/img; --quick: none)")
    args = parser.parse_args()
    args.out = args.out or ("bench/results/payoff-quick.json" if args.quick else "bench/results/payoff.json")
    if args.img_dir is None and not args.quick:
        args.img_dir = "docs/img"
    args.batches = (1, 4, 16) if args.quick else (1, 4, 16, 64)
    torch.set_num_threads(args.torch_threads)
    default = BUILTIN_FAMILIES if args.quick else (*BUILTIN_FAMILIES, "allen-cahn")
    chosen = args.families.split(",") if args.families else list(default)
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for plan in [*plans(args.quick), *plugin_plans(args.quick)]:
            if plan.family in chosen:
                results[plan.family] = run_family(plan, args, Path(folder))
    print_table(results)
    seconds = time.perf_counter() - started
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    print(f"\n{machine}, torch threads {torch.get_num_threads()}; {seconds:.0f} s")
    write_results(
        args.out,
        {
            "machine": machine,
            "args": {k: v for k, v in vars(args).items()},
            "seconds": seconds,
            "families": results,
        },
    )


if __name__ == "__main__":
    main()
