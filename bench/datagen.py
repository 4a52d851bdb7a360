"""Data-generation speed, ratios measured side by side in one run.

Darcy: the whole pipeline (field sampling, assembly, factorisation, solve, subsampling, HDF5 write) against
the bare factorisation + solve of the same matrices (symbolic factorisation reused in both), at the
benchmark's solve resolution. Target: pipeline / bare <= 1.25.

Usage: ``python bench/datagen.py [--n 8] [--solve-resolution 421] [--resolution 85] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import platform
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
        a = np.where(field.sample(grid, rng) >= 0, params.a_high, params.a_low)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--solve-resolution", type=int, default=421)
    parser.add_argument("--resolution", type=int, default=85)
    parser.add_argument("--out", default="bench/results/datagen.json")
    args = parser.parse_args()
    result = {
        "device": f"{platform.machine()} CPU",
        "darcy": darcy(args.n, args.solve_resolution, args.resolution),
    }
    d = result["darcy"]
    print(
        f"Darcy {d['solve_resolution']} -> {d['resolution']}, {d['samples']} samples: pipeline "
        f"{d['pipeline_s_per_sample']:.3f} s/sample, bare factorise+solve {d['bare_solve_s_per_sample']:.3f} "
        f"s/sample, ratio {d['pipeline_over_bare']:.2f} (target <= 1.25)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
