"""Does warm-starting a Krylov solver from the surrogate's answer pay, against the same solver from zero
and against the direct solve?

Usage: ``python bench/refine.py [--quick] [--samples 20,10,6] [--helmholtz-samples 10] [--repeats 3]``.

Darcy (``f = 1``, the FNO benchmark's piecewise 12/3 coefficient) at 65, 129 and 257 points per side,
coefficients drawn fresh (root seed ``--seed``, not the bundled model's training seed 0): conjugate
gradients preconditioned by one smoothed-aggregation AMG V-cycle (pyamg, as ``operators/estimates.py``
refines), started from the bundled ``models/darcy-fno`` answer, from zero, and from a stand-in of known
accuracy (the direct solution plus a smooth perturbation of relative L2 ``--standin-error``: a surrogate
more accurate than the bundled one and with only smooth errors, the best case for a warm start), next
to the sparse direct solve (QDLDL, symbolic factorisation reused).

Helmholtz (the 101 x 101 benchmark, indefinite): GMRES (no restart) right-preconditioned by a
threshold incomplete LU (SuperLU ILUTP, ``--ilu-drop``), next to the SuperLU direct solve. There is no
bundled Helmholtz surrogate and training a useful one takes far more than minutes here, so the warm
starts are labelled stand-ins: the direct solution plus a smooth perturbation of 10% and of
``--standin-error`` relative L2, and the direct solution of the 51 x 51 grid interpolated.

Every path is timed whole (assembly, preconditioner set-up, the surrogate's forward pass where it
starts from it, and the iterations); one run per start to the finest tolerance records the iterations
and time at which the relative residual ``||b - A x|| / ||b||`` first meets each tolerance. Per sample
the paths run one after another, ``--repeats`` rounds in rotating orders, so a drift in machine speed
hits all of them, and each path keeps its best time of the rounds (preemption by other work only ever
adds time). Iteration counts do not depend on the machine: they are the robust result.
The forward pass runs on ``--torch-threads`` (default 1) and BLAS on one thread: on a shared 2-core
machine, idle worker threads spin and slow small operations down at random.
Prints Markdown tables of medians over the samples and writes JSON (default
``bench/results/refine.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

# Single-threaded BLAS for every path: on a shared 2-core machine, OpenBLAS threads spin on the
# vector-sized operations of the Krylov loops and make them 10-100x slower at random.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyamg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from common import write_results

from pdeserve.datagen.darcy import DarcyParameters, DarcySolver, assemble_darcy, darcy_batch
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.helmholtz import HelmholtzParameters, HelmholtzSolver, _prolong, benchmark_load
from pdeserve.datagen.random_fields import NeumannGaussianField
from pdeserve.operators import load_model

TOLERANCES = (1e-2, 1e-4, 1e-6)
MAX_ITERATIONS = 500


def relative_norm(x: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(x) / np.linalg.norm(reference))


class Crossings:
    """The iteration, elapsed time and iterate at which a residual first meets each tolerance."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.iterations: list[int | None] = [None] * len(TOLERANCES)
        self.seconds: list[float | None] = [None] * len(TOLERANCES)
        # The iterate at each tolerance, or a function forming it after the clock stops.
        self.iterates: list[np.ndarray | Callable[[], np.ndarray] | None] = [None] * len(TOLERANCES)

    def record(self, iteration: int, residual: float) -> list[int]:
        """Note every tolerance ``residual`` meets for the first time; returns their indices."""
        now = time.perf_counter() - self.started
        met = []
        for k, tolerance in enumerate(TOLERANCES):
            if self.iterations[k] is None and residual <= tolerance:
                self.iterations[k], self.seconds[k] = iteration, now
                met.append(k)
        return met

    @property
    def done(self) -> bool:
        return self.iterations[-1] is not None


def pcg(matrix: sp.csr_matrix, rhs: np.ndarray, guess: np.ndarray | None, precondition) -> Crossings:
    """Preconditioned conjugate gradients from ``guess`` (None: zero), to every tolerance."""
    crossings = Crossings(time.perf_counter())
    norm_b = np.linalg.norm(rhs)
    x = np.zeros_like(rhs) if guess is None else guess.copy()
    r = rhs.copy() if guess is None else rhs - matrix @ x
    for k in crossings.record(0, np.linalg.norm(r) / norm_b):
        crossings.iterates[k] = x.copy()
    if crossings.done:
        return crossings
    z = precondition(r)
    p = z.copy()
    rz = r @ z
    for iteration in range(1, MAX_ITERATIONS + 1):
        q = matrix @ p
        alpha = rz / (p @ q)
        x += alpha * p
        r -= alpha * q
        for k in crossings.record(iteration, np.linalg.norm(r) / norm_b):
            crossings.iterates[k] = x.copy()
        if crossings.done:
            break
        z = precondition(r)
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return crossings


def gmres(matrix: sp.csr_matrix, rhs: np.ndarray, guess: np.ndarray | None, precondition) -> Crossings:
    """GMRES right-preconditioned (so its residual estimate is the true residual's), no restart."""
    crossings = Crossings(time.perf_counter())
    norm_b = np.linalg.norm(rhs)
    x0 = np.zeros_like(rhs) if guess is None else guess.copy()
    r = rhs.copy() if guess is None else rhs - matrix @ x0
    beta = np.linalg.norm(r)
    for k in crossings.record(0, beta / norm_b):
        crossings.iterates[k] = x0.copy()
    if crossings.done:
        return crossings
    m = MAX_ITERATIONS
    basis = np.zeros((m + 1, len(rhs)))
    hessenberg = np.zeros((m + 1, m))
    cs, sn, g = np.zeros(m), np.zeros(m), np.zeros(m + 1)
    basis[0], g[0] = r / beta, beta
    directions: list[np.ndarray] = []

    def iterate(j: int) -> Callable[[], np.ndarray]:
        def solution() -> np.ndarray:
            y = np.linalg.solve(np.triu(hessenberg[:j, :j]), g[:j])
            return x0 + np.asarray(directions[:j]).T @ y

        return solution

    for j in range(m):
        z = precondition(basis[j])
        directions.append(z)
        w = matrix @ z
        for i in range(j + 1):  # modified Gram-Schmidt
            hessenberg[i, j] = w @ basis[i]
            w -= hessenberg[i, j] * basis[i]
        hessenberg[j + 1, j] = np.linalg.norm(w)
        if hessenberg[j + 1, j] > 0:
            basis[j + 1] = w / hessenberg[j + 1, j]
        for i in range(j):  # apply the earlier rotations to the new column
            hi, hk = hessenberg[i, j], hessenberg[i + 1, j]
            hessenberg[i, j], hessenberg[i + 1, j] = cs[i] * hi + sn[i] * hk, -sn[i] * hi + cs[i] * hk
        denominator = np.hypot(hessenberg[j, j], hessenberg[j + 1, j])
        cs[j], sn[j] = hessenberg[j, j] / denominator, hessenberg[j + 1, j] / denominator
        hessenberg[j, j], hessenberg[j + 1, j] = denominator, 0.0
        g[j + 1], g[j] = -sn[j] * g[j], cs[j] * g[j]
        # The iterate is formed only after the clock stops (for the accuracy columns): columns and
        # entries 0..j of the rotated Hessenberg matrix and of g are final from here on.
        for k in crossings.record(j + 1, abs(g[j + 1]) / norm_b):
            crossings.iterates[k] = iterate(j + 1)
        if crossings.done:
            break
    return crossings


def finish(crossings: Crossings, before: float) -> dict:
    """Iterations, solver seconds and whole-path seconds (``before`` + solver) per tolerance."""
    return {
        "iterations": crossings.iterations,
        "solver_seconds": crossings.seconds,
        "total_seconds": [None if s is None else before + s for s in crossings.seconds],
    }


def accuracy(crossings: Crossings, matrix, rhs: np.ndarray, exact: np.ndarray) -> dict:
    """True relative residual and relative L2 error (vs ``exact``) of the iterate at each tolerance."""
    residuals, errors = [], []
    for make in crossings.iterates:
        if make is None:
            residuals.append(None)
            errors.append(None)
            continue
        x = make() if callable(make) else make
        residuals.append(relative_norm(rhs - matrix @ x, rhs))
        errors.append(relative_norm(x - exact, exact))
    return {"true_residual": residuals, "error": errors}


def smooth_perturbation(u: np.ndarray, size: float, rng: np.random.Generator, dirichlet: bool) -> np.ndarray:
    """``u`` plus a smooth Gaussian-field perturbation of relative L2 ``size`` (zero on the boundary
    when ``dirichlet``)."""
    grid = UnitSquareGrid(u.shape[-1])
    bump = NeumannGaussianField(2.0, 3.0).sample(grid, rng)
    if dirichlet:
        x, y = grid.mesh()
        bump *= np.sin(np.pi * x) * np.sin(np.pi * y)
    return u + bump * (size * np.linalg.norm(u) / np.linalg.norm(bump))


def timed_direct(solve: Callable[[], np.ndarray], exact: np.ndarray) -> dict:
    started = time.perf_counter()
    u = solve()
    return {"seconds": time.perf_counter() - started, "error_vs_reference": relative_norm(u - exact, exact)}


def timed_iterative(
    assemble: Callable[[], sp.spmatrix],
    set_up: Callable[[sp.spmatrix], Callable[[np.ndarray], np.ndarray]],
    krylov: Callable,
    rhs: np.ndarray,
    start: Callable[[], np.ndarray] | np.ndarray | None,
    exact: np.ndarray,
) -> dict:
    """One whole iterative path: the start (a surrogate's forward pass when ``start`` is callable),
    assembly, preconditioner set-up and the Krylov iterations, each timed."""
    started = time.perf_counter()
    guess = start() if callable(start) else start
    forwarded = time.perf_counter()
    matrix = assemble()
    assembled = time.perf_counter()
    precondition = set_up(matrix)
    prepared = time.perf_counter()
    crossings = krylov(matrix, rhs, guess, precondition)
    result = finish(crossings, prepared - started)
    result.update(
        forward_seconds=forwarded - started,
        assembly_seconds=assembled - forwarded,
        setup_seconds=prepared - assembled,
    )
    result.update(accuracy(crossings, matrix, rhs, exact))
    if guess is not None:
        result["start_residual"] = relative_norm(rhs - matrix @ guess, rhs)
        result["start_error"] = relative_norm(guess - exact, exact)
    return result


TIMES = ("forward_seconds", "assembly_seconds", "setup_seconds", "seconds")
TIMES_PER_TOLERANCE = ("solver_seconds", "total_seconds")


def best(first: dict, other: dict) -> dict:
    """``first`` with every time the smaller of the two runs' (iterations and iterates are the same)."""
    out = dict(first)
    for key in TIMES:
        if key in out:
            out[key] = min(out[key], other[key])
    for key in TIMES_PER_TOLERANCE:
        if key in out:
            out[key] = [None if a is None else min(a, b) for a, b in zip(out[key], other[key], strict=True)]
    return out


def run_rotated(paths: dict[str, Callable[[], dict]], shift: int, repeats: int) -> dict[str, dict]:
    """Run every path ``repeats`` times, interleaved, each round in an order rotated by ``shift`` plus
    the round (so that no path always goes first); keep every path's best times."""
    results: dict[str, dict] = {}
    names = list(paths)
    for round_ in range(repeats):
        k = (shift + round_) % len(names)
        for name in names[k:] + names[:k]:
            result = paths[name]()
            results[name] = best(results[name], result) if name in results else result
    return {name: results[name] for name in names}


def amg_preconditioner(matrix: sp.spmatrix) -> Callable[[np.ndarray], np.ndarray]:
    """One smoothed-aggregation AMG V-cycle (pyamg's defaults, as ``operators/estimates.py``)."""
    return pyamg.smoothed_aggregation_solver(matrix, symmetry="hermitian").aspreconditioner()


def darcy_side(model, side: int, samples: int, seed: int, standin_error: float, repeats: int) -> list[dict]:
    grid = UnitSquareGrid(side)
    params = DarcyParameters()
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, side, i])) for i in range(samples)]
    draws = darcy_batch(params, side, rngs)
    direct = DarcySolver(grid)
    started = time.perf_counter()
    direct.solve(draws["a"][0], params.forcing)  # symbolic factorisation, reused by every timed solve
    symbolic_seconds = time.perf_counter() - started
    model.predict({"a": draws["a"][0]})  # warm-up: allocator, FFT plans
    rhs = np.full((side - 2) ** 2, params.forcing)
    rows = []
    for i, a in enumerate(draws["a"]):
        exact = draws["u"][i][1:-1, 1:-1].ravel()
        standin = smooth_perturbation(
            draws["u"][i], standin_error, np.random.default_rng([seed, side, i, 1]), True
        )

        def surrogate(a: np.ndarray = a) -> np.ndarray:
            return np.asarray(model.predict({"a": a})["u"], dtype=np.float64)[1:-1, 1:-1].ravel()

        def iterative(start, a: np.ndarray = a, exact: np.ndarray = exact) -> Callable[[], dict]:
            return lambda: timed_iterative(
                lambda: assemble_darcy(a, grid).tocsr(), amg_preconditioner, pcg, rhs, start, exact
            )

        paths = {
            "direct": lambda a=a, exact=exact: timed_direct(
                lambda: direct.solve(a, params.forcing)[1:-1, 1:-1].ravel(), exact
            ),
            "zero": iterative(None),
            "surrogate": iterative(surrogate),
            "standin": iterative(standin[1:-1, 1:-1].ravel()),
        }
        row = {"side": side, "sample": i, "symbolic_seconds": symbolic_seconds}
        rows.append(row | run_rotated(paths, i, repeats))
    return rows


def helmholtz_rows(samples: int, seed: int, drop: float, standin_error: float, repeats: int) -> list[dict]:
    params = HelmholtzParameters().for_resolution(101)
    grid, coarse = UnitSquareGrid(101), UnitSquareGrid(51)
    solver, coarse_solver = HelmholtzSolver(grid, params.omega), HelmholtzSolver(coarse, params.omega)
    load = benchmark_load(params, grid)
    rhs = load.ravel()

    def ilu_preconditioner(matrix: sp.spmatrix) -> Callable[[np.ndarray], np.ndarray]:
        return spla.spilu(matrix, drop_tol=drop, fill_factor=20, permc_spec="MMD_AT_PLUS_A").solve

    rows = []
    for i in range(samples):
        c = params.sample_speed(grid, np.random.default_rng(np.random.SeedSequence([seed, 101, i])))
        exact = solver.solve(c, load).ravel()
        coarse_u = coarse_solver.solve(c[::2, ::2], benchmark_load(params, coarse))
        rng = np.random.default_rng([seed, 101, i, 1])
        u = exact.reshape(101, 101)
        starts = {
            "zero": None,
            "standin_10pct": smooth_perturbation(u, 0.1, rng, False).ravel(),
            "standin_small": smooth_perturbation(u, standin_error, rng, False).ravel(),
            "coarse_51": _prolong(coarse_u, 2).ravel(),
        }

        def iterative(start, c: np.ndarray = c, exact: np.ndarray = exact) -> Callable[[], dict]:
            return lambda: timed_iterative(
                lambda: solver.matrix(c), ilu_preconditioner, gmres, rhs, start, exact
            )

        paths = {
            "direct": lambda c=c, exact=exact: timed_direct(lambda: solver.solve(c, load).ravel(), exact)
        }
        paths |= {name: iterative(start) for name, start in starts.items()}
        row = {"side": 101, "sample": i} | run_rotated(paths, i, repeats)
        if i == 0:  # the fill of the incomplete factors against the complete LU's, untimed
            matrix = solver.matrix(c)
            ilu = spla.spilu(matrix, drop_tol=drop, fill_factor=20, permc_spec="MMD_AT_PLUS_A")
            lu = spla.splu(
                matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options={"SymmetricMode": True}
            )
            row["ilu_nonzeros"], row["lu_nonzeros"] = ilu.L.nnz + ilu.U.nnz, lu.L.nnz + lu.U.nnz
            print(
                f"helmholtz: incomplete LU {row['ilu_nonzeros']} nonzeros, complete LU {row['lu_nonzeros']}"
            )
        rows.append(row)
    return rows


def median(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else float("nan")


def column(rows: list[dict], start: str, key: str, k: int | None = None) -> float:
    return median([r[start][key] if k is None else r[start][key][k] for r in rows])


def summarise(rows: list[dict], starts: list[str]) -> list[dict]:
    """Medians over the samples of one grid, per start and tolerance, and the per-sample time ratios."""
    summary = []
    direct = median([r["direct"]["seconds"] for r in rows])
    for start in starts:
        for k, tolerance in enumerate(TOLERANCES):
            entry = {
                "side": rows[0]["side"],
                "start": start,
                "tolerance": tolerance,
                "samples": len(rows),
                "iterations": column(rows, start, "iterations", k),
                "unconverged": sum(r[start]["iterations"][k] is None for r in rows),
                "setup_ms": 1e3 * column(rows, start, "setup_seconds"),
                "forward_ms": 1e3 * column(rows, start, "forward_seconds"),
                "solver_ms": 1e3 * column(rows, start, "solver_seconds", k),
                "total_ms": 1e3 * column(rows, start, "total_seconds", k),
                "direct_ms": 1e3 * direct,
                "error": column(rows, start, "error", k),
                # Ratios within a sample (same machine state): whole path vs the zero start and vs direct.
                "total_over_zero": median(
                    [
                        r[start]["total_seconds"][k] / r["zero"]["total_seconds"][k]
                        for r in rows
                        if r[start]["total_seconds"][k] and r["zero"]["total_seconds"][k]
                    ]
                ),
                # The same without the forward pass: refining an answer the client already has.
                "refine_over_zero": median(
                    [
                        (r[start]["total_seconds"][k] - r[start]["forward_seconds"])
                        / r["zero"]["total_seconds"][k]
                        for r in rows
                        if r[start]["total_seconds"][k] and r["zero"]["total_seconds"][k]
                    ]
                ),
                "total_over_direct": median(
                    [
                        r[start]["total_seconds"][k] / r["direct"]["seconds"]
                        for r in rows
                        if r[start]["total_seconds"][k]
                    ]
                ),
            }
            if start != "zero":
                entry["start_residual"] = column(rows, start, "start_residual")
                entry["start_error"] = column(rows, start, "start_error")
            summary.append(entry)
    return summary


def print_table(title: str, summary: list[dict]) -> None:
    print(f"\n{title}\n")
    print(
        "| side | start | start residual | start error | tol | iters | set-up ms | forward ms "
        "| Krylov ms | total ms | direct ms | total / zero | (total - forward) / zero | total / direct "
        "| error |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in summary:
        start_residual = f"{e['start_residual']:.2g}" if "start_residual" in e else "1"
        start_error = f"{e['start_error']:.2g}" if "start_error" in e else "1"
        iterations = f"{e['iterations']:g}" + (f" ({e['unconverged']} unconv.)" if e["unconverged"] else "")
        print(
            f"| {e['side']} | {e['start']} | {start_residual} | {start_error} | {e['tolerance']:.0e} "
            f"| {iterations} | {e['setup_ms']:.1f} | {e['forward_ms']:.1f} | {e['solver_ms']:.1f} "
            f"| {e['total_ms']:.1f} | {e['direct_ms']:.1f} | {e['total_over_zero']:.2f} "
            f"| {e['refine_over_zero']:.2f} "
            f"| {e['total_over_direct']:.2f} | {e['error']:.1e} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny Darcy grids, one Helmholtz sample (< 30 s)"
    )
    parser.add_argument("--sides", default="65,129,257", help="Darcy grid sides")
    parser.add_argument("--samples", default="20,10,6", help="Darcy samples per side (one number: all)")
    parser.add_argument("--helmholtz-samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per sample; best times kept")
    parser.add_argument("--seed", type=int, default=20240917, help="root seed of the fresh coefficients")
    parser.add_argument("--standin-error", type=float, default=0.01, help="relative L2 of the small stand-in")
    parser.add_argument("--ilu-drop", type=float, default=1e-2, help="ILUTP drop tolerance (Helmholtz)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="threads of the surrogate's forward pass (0: torch's default)",
    )
    parser.add_argument("--model-repo", default="models")
    parser.add_argument("--model", default="darcy-fno")
    parser.add_argument("--out", default="bench/results/refine.json")
    args = parser.parse_args()
    if args.quick:
        args.sides, args.samples, args.helmholtz_samples = "17,33", "2", 1
    sides = [int(s) for s in args.sides.split(",")]
    counts = [int(s) for s in args.samples.split(",")]
    counts = counts * len(sides) if len(counts) == 1 else counts
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = load_model(args.model_repo, args.model)
    print(
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}; medians over samples; times in ms"
    )
    darcy_starts = ["zero", "surrogate", "standin"]
    darcy, darcy_summary = [], []
    for side, count in zip(sides, counts, strict=True):
        rows = darcy_side(model, side, count, args.seed, args.standin_error, args.repeats)
        darcy += rows
        darcy_summary += summarise(rows, darcy_starts)
        print(f"darcy {side}: {count} samples done", flush=True)
    print_table(
        f"Darcy, AMG(SA)-preconditioned CG; standin = direct solution + smooth "
        f"{args.standin_error:.0%} error",
        darcy_summary,
    )
    helmholtz = helmholtz_rows(
        args.helmholtz_samples, args.seed, args.ilu_drop, args.standin_error, args.repeats
    )
    helmholtz_starts = ["zero", "standin_10pct", "standin_small", "coarse_51"]
    helmholtz_summary = summarise(helmholtz, helmholtz_starts)
    print_table(
        f"Helmholtz 101, GMRES right-preconditioned by ILUTP(drop {args.ilu_drop:g}, fill 20); "
        f"stand-in warm starts (no surrogate)",
        helmholtz_summary,
    )
    write_results(
        args.out,
        {
            "args": vars(args),
            "tolerances": TOLERANCES,
            "darcy": {"summary": darcy_summary, "rows": darcy},
            "helmholtz": {"summary": helmholtz_summary, "rows": helmholtz},
        },
    )


if __name__ == "__main__":
    main()
