"""Data-generation speed, ratios measured side by side in one run.

Navier-Stokes: pdeserve's solver (second order: Crank-Nicolson + second-order Adams-Bashforth, one
nonlinear evaluation per step) against the FNO authors' torch function ``navier_stokes_2d``
(Crank-Nicolson + explicit Euler, first order) on the same initial fields, 64x64, batch 20, microseconds per
sample and time step, float32 and float64 on this CPU (and CUDA when present). Target: theirs / ours >= 2.
Each timing is one whole call of ``--ns-steps`` steps; the two codes alternate, in ABBA order, for
``--ns-repeats`` repetitions, so that load from other processes on a shared machine hits both alike, and
the report gives the medians, the minima and the median of the per-repetition ratios. Their script is
public code that this repository does not ship: fetch ``data_generation/navier_stokes/ns_2d.py`` of
neuraloperator/neuraloperator into ``bench/third_party/ns_2d.py`` (git-ignored); only its
``navier_stokes_2d`` function is loaded.

Darcy: the whole pipeline (field sampling, assembly, factorisation, solve, subsampling, HDF5 write) against
the bare factorisation + solve of the same matrices (symbolic factorisation reused in both), at the
benchmark's solve resolution. Target: pipeline / bare <= 1.25.

Workers: the same Darcy command with ``--workers 1`` and ``--workers W`` (processes), samples per second of
each and their ratio (it can only grow up to the number of free cores).

Usage: ``python bench/datagen.py [--only navier-stokes|darcy|workers] [--n 8] [--solve-resolution 421]
[--resolution 85] [--ns-steps 100] [--ns-repeats 25] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import qdldl
import scipy.sparse as sp

from pdeserve.datagen.darcy import DarcyParameters, assemble_darcy
from pdeserve.datagen.dataset import GenerationRequest, write_dataset
from pdeserve.datagen.families import get_family
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.datagen.random_fields import NeumannGaussianField


def darcy(n: int, solve_resolution: int, resolution: int) -> dict[str, float]:
    params = DarcyParameters(solve_resolution=solve_resolution)
    request = GenerationRequest(get_family("darcy"), params, n, resolution, seed=0, dtype="float64")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_dataset(request, Path(tmp) / "darcy.h5", chunk_size=n, progress=False)
        pipeline = time.perf_counter() - started

    # The same matrices (same seeds), assembled up front; only factorise + solve is timed.
    grid, field = UnitSquareGrid(solve_resolution), NeumannGaussianField(params.alpha, params.tau)
    matrices = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([0, i]))
        a = params.coefficient_from(field.sample(grid, rng))
        matrices.append(sp.triu(assemble_darcy(a, grid), format="csc"))
    rhs = np.ones(matrices[0].shape[0])
    started = time.perf_counter()
    ldl = qdldl.Solver(matrices[0], upper=True)
    ldl.solve(rhs)
    for matrix in matrices[1:]:
        ldl.update(matrix, upper=True)
        ldl.solve(rhs)
    bare = time.perf_counter() - started
    return {
        "samples": n,
        "solve_resolution": solve_resolution,
        "resolution": resolution,
        "pipeline_s_per_sample": pipeline / n,
        "bare_solve_s_per_sample": bare / n,
        "pipeline_over_bare": pipeline / bare,
    }


def workers_scaling(n: int, solve_resolution: int, resolution: int, workers: int) -> dict[str, float]:
    """Samples per second of the whole Darcy pipeline with 1 and with ``workers`` processes."""
    params = DarcyParameters(solve_resolution=solve_resolution)
    request = GenerationRequest(get_family("darcy"), params, n, resolution, seed=0, dtype="float32")
    result: dict[str, float] = {"samples": n, "solve_resolution": solve_resolution, "workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        for count in (1, workers):
            started = time.perf_counter()
            chunk = max(1, n // (4 * count))  # several chunks per worker, so all of them stay busy
            out = Path(tmp) / f"w{count}.h5"
            write_dataset(request, out, chunk_size=chunk, workers=count, progress=False)
            result[f"samples_per_s_{count}"] = n / (time.perf_counter() - started)
    result["speedup"] = result[f"samples_per_s_{workers}"] / result["samples_per_s_1"]
    return result


def _fno_solver(path: Path):
    """The ``navier_stokes_2d`` function of the FNO authors' script, without running its module code."""
    import torch

    tree = ast.parse(path.read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "navier_stokes_2d")
    namespace = {"torch": torch, "math": math}
    exec(compile(ast.Module([function], []), str(path), "exec"), namespace)
    return namespace["navier_stokes_2d"]


def navier_stokes(script: Path, batch: int, n: int, steps: int, repeats: int) -> dict[str, float]:
    """Both solvers, interleaved: medians (and minima) over ``repeats`` timed calls of ``steps`` steps."""
    import torch

    from pdeserve.datagen.navier_stokes import NavierStokesParameters, forcing_field, solve_navier_stokes

    params = NavierStokesParameters()
    rng = np.random.default_rng(0)
    w0 = np.stack([params.field.sample(n, rng) for _ in range(batch)])
    horizon = steps * params.time_step
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result: dict[str, float] = {"batch": batch, "resolution": n, "steps": steps, "repeats": repeats}
    theirs = _fno_solver(script) if script.is_file() else None
    for device in devices:
        for dtype in (torch.float32, torch.float64):
            tag = f"{device}_{str(dtype).removeprefix('torch.')}"
            w = torch.as_tensor(w0, dtype=dtype, device=device)
            f = torch.as_tensor(forcing_field(n, params.forcing_amplitude), dtype=dtype, device=device)

            def ours(w=w, f=f):
                solve_navier_stokes(w, f, params.viscosity, params.time_step, [horizon])

            def fno(w=w, f=f):
                theirs(w, f, params.viscosity, horizon, params.time_step, 1)

            runs = {"pdeserve": ours} | ({"fno_script": fno} if theirs else {})

            def timed(run, device=device) -> float:
                if device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                run()
                if device == "cuda":
                    torch.cuda.synchronize()
                return (time.perf_counter() - started) / steps / batch * 1e6

            for run in runs.values():
                run()  # warm-up (FFT plans, CUDA context)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for repeat in range(repeats):
                # ABBA: neither code always runs first, right after the other has warmed the caches.
                for name in list(runs) if repeat % 2 == 0 else reversed(runs):
                    times[name].append(timed(runs[name]))
            for name, values in times.items():
                result[f"{name}_{tag}_us_per_sample_step"] = statistics.median(values)
                result[f"{name}_{tag}_us_per_sample_step_min"] = min(values)
            if theirs:
                result[f"speedup_{tag}"] = (
                    result[f"fno_script_{tag}_us_per_sample_step"]
                    / result[f"pdeserve_{tag}_us_per_sample_step"]
                )
                paired = [a / b for a, b in zip(times["fno_script"], times["pdeserve"], strict=True)]
                result[f"speedup_{tag}_paired_median"] = statistics.median(paired)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        choices=["darcy", "navier-stokes", "workers"],
        help="run one of the benchmarks (--out holds only it)",
    )
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--solve-resolution", type=int, default=421)
    parser.add_argument("--resolution", type=int, default=85)
    parser.add_argument("--ns-steps", type=int, default=100, help="Navier-Stokes time steps per timed call")
    parser.add_argument("--ns-repeats", type=int, default=25, help="timed calls per Navier-Stokes code")
    parser.add_argument("--workers", type=int, default=2, help="processes compared with one")
    parser.add_argument("--workers-n", type=int, default=192, help="samples of the workers benchmark")
    parser.add_argument("--fno-script", type=Path, default=Path("bench/third_party/ns_2d.py"))
    parser.add_argument("--out", default="bench/results/datagen.json")
    args = parser.parse_args()
    result: dict[str, object] = {"device": f"{platform.machine()} CPU"}
    if args.only in (None, "navier-stokes"):
        ns = navier_stokes(args.fno_script, batch=20, n=64, steps=args.ns_steps, repeats=args.ns_repeats)
        result["navier_stokes"] = ns
        print(
            f"Navier-Stokes 64x64, batch 20, us per sample and time step, medians (minima) of "
            f"{ns['repeats']} interleaved calls of {ns['steps']} steps each:"
        )
        suffix = "_us_per_sample_step"
        for key in [key for key in ns if key.startswith("pdeserve_") and key.endswith(suffix)]:
            tag = key.removeprefix("pdeserve_").removesuffix(suffix)
            line = f"  {tag}: pdeserve {ns[key]:.1f} ({ns[key + '_min']:.1f})"
            if f"speedup_{tag}" in ns:
                theirs = f"fno_script_{tag}{suffix}"
                line += (
                    f", FNO script {ns[theirs]:.1f} ({ns[theirs + '_min']:.1f}): "
                    f"ratio {ns[f'speedup_{tag}']:.2f} (median of the per-call ratios "
                    f"{ns[f'speedup_{tag}_paired_median']:.2f}; target >= 2)"
                )
            print(line)
        if not args.fno_script.is_file():
            print(f"(the FNO authors' script is not at {args.fno_script}: no side-by-side ratio)")
    if args.only in (None, "workers"):
        w = result["workers"] = workers_scaling(args.workers_n, 253, 64, args.workers)
        print(
            f"Darcy 253 -> 64, {w['samples']} samples: {w['samples_per_s_1']:.1f} samples/s with 1 process, "
            f"{w[f'samples_per_s_{args.workers}']:.1f} with {args.workers}: speed-up {w['speedup']:.2f}"
        )
    if args.only in (None, "darcy"):
        d = result["darcy"] = darcy(args.n, args.solve_resolution, args.resolution)
        print(
            f"Darcy {d['solve_resolution']} -> {d['resolution']}, {d['samples']} samples: pipeline "
            f"{d['pipeline_s_per_sample']:.3f} s/sample, bare factorise+solve "
            f"{d['bare_solve_s_per_sample']:.3f} s/sample, ratio {d['pipeline_over_bare']:.2f} "
            "(target <= 1.25)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
