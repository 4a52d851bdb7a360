"""Fortran ``Solve`` round trip against the Python client's, side by side in one run.

Both send the same 64 x 64 float32 coefficient (batch 1) to ``darcy-fno`` and read back ``u``. The
Fortran side is ``client_check bench`` (clients/checks), built with CMake if ``--build`` has no build:
a long-lived process that makes one ``pdeserve_solve_field`` call (request, Solve, answer copied into a
Fortran array) per line it reads and prints the microseconds that call took. The Python side times
``SolverClient.solve`` (numpy in, numpy out) in this process. Calls alternate one by one, the side that
goes first swapping every pair, after ``--warmup`` uncounted calls each, so both see the same server
and machine. Target: Fortran p50 <= 1.1x Python p50.

Usage: ``python bench/fortran_roundtrip.py --target HOST:PORT [--calls 300] [--warmup 20]
[--resolution 64] [--build DIR] [--out FILE]``. Prints a table and writes JSON (default
``bench/results/fortran_roundtrip.json``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

import common
import numpy as np

from pdeserve.serving.client import SolverClient

ROOT = Path(__file__).resolve().parents[1]


def build_checks(build_dir: Path) -> Path:
    binary = build_dir / "client_check"
    if not binary.is_file():
        subprocess.run(
            ["cmake", "-S", str(ROOT / "clients"), "-B", str(build_dir), "-DPDESERVE_CHECKS=ON"], check=True
        )
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--parallel", "2", "--target", "client_check"], check=True
        )
    return binary


def field(n: int) -> np.ndarray:
    """client_check's field: a[i, j] = 12 where ((2 i + j) // (n // 4)) is even, else 3."""
    i, j = np.indices((n, n))
    return np.where((2 * i + j) // max(1, n // 4) % 2 == 0, 12.0, 3.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:9000")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "clients-bench")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fortran_roundtrip.json"))
    args = parser.parse_args()

    binary = build_checks(args.build)
    a = field(args.resolution)
    fortran = subprocess.Popen(
        [str(binary), "bench", args.target, str(args.resolution)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )

    def fortran_call() -> float:
        fortran.stdin.write("go\n")
        fortran.stdin.flush()
        line = fortran.stdout.readline()
        if not line.startswith("us="):
            raise SystemExit(f"client_check bench failed: {line!r} (exit {fortran.poll()})")
        return float(line[3:]) / 1e3

    with SolverClient(args.target, timeout=60) as client:

        def python_call() -> float:
            start = time.perf_counter()
            client.solve("darcy-fno", {"a": a})
            return (time.perf_counter() - start) * 1e3

        for _ in range(args.warmup):
            python_call()
            fortran_call()
        python_ms, fortran_ms = [], []
        for k in range(args.calls):
            if k % 2 == 0:
                python_ms.append(python_call())
                fortran_ms.append(fortran_call())
            else:
                fortran_ms.append(fortran_call())
                python_ms.append(python_call())
    fortran.stdin.write("quit\n")
    fortran.stdin.close()
    fortran.wait(timeout=30)

    rows = {"python": common.summary(np.array(python_ms)), "fortran": common.summary(np.array(fortran_ms))}
    ratio = rows["fortran"]["p50_ms"] / rows["python"]["p50_ms"]
    print(f"{'client':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, row in rows.items():
        print(f"{name:<8} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['mean_ms']:8.2f}")
    print(f"Fortran / Python p50: {ratio:.3f} (target <= 1.1)")
    common.write_results(
        args.out,
        {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "target": args.target,
            "resolution": args.resolution,
            "calls": args.calls,
            "results": rows,
            "fortran_over_python_p50": ratio,
        },
    )


if __name__ == "__main__":
    main()
