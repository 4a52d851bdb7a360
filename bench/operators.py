"""Inference latency of every registered operator: the served forward pass against the eager one, and
per resolution.

Usage: ``python bench/operators.py [--models fno,tfno,mgno,galerkin] [--device auto] [--threads N]
[--side 64] [--rounds 7] [--no-sweep]``.

Served against eager: for each architecture on a ``side`` x ``side`` grid (Dirichlet defaults, as the
bundled Darcy models), batch 1 and 32, the plain ``model(x)`` under ``torch.inference_mode`` and the
forward pass serving runs (``operators/acceleration.py``'s inference twin) are timed alternately,
``rounds`` times each; medians, their ratio, the largest relative difference of the answers, and the
achieved GFLOP/s. FLOPs are those of the eager model: ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matrix products, a complex product counted as a real one) plus 2.5 N log2 N per real
FFT of N points (its counter skips FFTs); both sides are credited the same FLOPs. The practical peak is
a 2048 x 2048 float32 matrix product on the same threads. Both sides run with a replica's allocator
settings (serving/allocator.py).

Per resolution (``--sweep``, on by default): untrained models built from the registry's periodic defaults
for the grid, 2D models at 64, 128 and 256 points per side, 1D models at 1024 to 16384 points; median
milliseconds of the eager model. Writes JSON (default ``bench/results/operators.json``).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from common import resolve_device, write_results
from torch.utils.flop_counter import FlopCounterMode

from pdeserve.operators.acceleration import served_module
from pdeserve.operators.registry import ARCHITECTURES, get_architecture, make_config
from pdeserve.serving.allocator import retain_freed_memory

SIDES = {1: (1024, 4096, 16384), 2: (64, 128, 256)}


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, x: torch.Tensor, calls: int) -> float:
    model(x)  # warm-up: allocator, FFT plans
    if x.is_cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
    return float(np.median(times))


def fft_flops(per_point: float) -> object:
    """A flop formula: ``per_point`` N log2 N per transform of N points over ``dim`` (5 for a complex
    FFT, 2.5 for a real one), N the points of the real side of the transform."""

    def formula(
        shape: torch.Size, dim: list[int], *args: object, out_shape: torch.Size, **kwargs: object
    ) -> int:
        full = shape if math.prod(shape) >= math.prod(out_shape) else out_shape
        return int(per_point * math.prod(full) * math.log2(math.prod(full[d] for d in dim)))

    return formula


FFT_FLOPS = {
    torch.ops.aten._fft_r2c: fft_flops(2.5),
    torch.ops.aten._fft_c2r: fft_flops(2.5),
    torch.ops.aten._fft_c2c: fft_flops(5.0),
}


@torch.inference_mode()
def eager_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one eager forward pass: counted products and convolutions plus estimated FFTs."""
    counter = FlopCounterMode(display=False, custom_mapping=FFT_FLOPS)
    with counter:
        model(x)
    return counter.get_total_flops()


def matmul_peak_gflops(device: str, n: int = 2048, calls: int = 7) -> float:
    """Practical float32 peak: the median GFLOP/s of an ``n`` x ``n`` matrix product."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = alternated({"mm": lambda: a @ b}, calls, device)["mm"]
    return 2 * n**3 / seconds / 1e9


def alternated(calls: dict[str, object], rounds: int, device: str) -> dict[str, float]:
    """Median seconds of each zero-argument callable, called in turn ``rounds`` times after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if device == "cuda":
                torch.cuda.synchronize()
            if round_:  # the first round warms up: allocator, DFT matrices, oneDNN kernels
                times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t)) for name, t in times.items()}


@torch.inference_mode()
def served_against_eager(name: str, side: int, batch: int, rounds: int, device: str) -> dict[str, object]:
    """One row: eager and served medians, speedup, answer difference and GFLOP/s of an architecture."""
    torch.manual_seed(0)
    model = (
        make_config(name, get_architecture(name).default_arguments(2, "dirichlet")).build().to(device).eval()
    )
    served = served_module(model, torch.device(device))
    x = torch.randn(batch, 1, side, side, device=device)
    reference = model(x)
    difference = float((served(x) - reference).norm() / reference.norm())
    seconds = alternated({"eager": lambda: model(x), "served": lambda: served(x)}, rounds, device)
    flops = eager_flops(model, x)
    return {
        "model": name,
        "side": side,
        "batch": batch,
        "eager_ms": seconds["eager"] * 1e3,
        "served_ms": seconds["served"] * 1e3,
        "speedup": seconds["eager"] / seconds["served"],
        "relative_difference": difference,
        "gflop": flops / 1e9,
        "eager_gflops": flops / seconds["eager"] / 1e9,
        "served_gflops": flops / seconds["served"] / 1e9,
    }


def compare(models: list[str], side: int, batches: list[int], rounds: int, device: str) -> dict[str, object]:
    peak = matmul_peak_gflops(device)
    print(f"served against eager at {side}x{side}, median of {rounds} alternated calls")
    print(f"practical peak (2048 x 2048 float32 matmul): {peak:.1f} GFLOP/s")
    print(
        f"{'model':9s} {'batch':>5s} {'eager ms':>9s} {'served ms':>9s} {'speedup':>7s} "
        f"{'GFLOP':>6s} {'eager GF/s':>10s} {'served GF/s':>11s} {'rel diff':>8s}"
    )
    rows = []
    for name in models:
        for batch in batches:
            row = served_against_eager(name, side, batch, rounds, device)
            rows.append(row)
            print(
                f"{name:9s} {batch:5d} {row['eager_ms']:9.1f} {row['served_ms']:9.1f} {row['speedup']:7.2f} "
                f"{row['gflop']:6.2f} {row['eager_gflops']:10.1f} {row['served_gflops']:11.1f} "
                f"{row['relative_difference']:8.1e}",
                flush=True,
            )
    return {"matmul_peak_gflops": peak, "rows": rows}


def sweep(models: list[str], batches: list[int], calls: int, device: str) -> list[dict[str, object]]:
    rows = []
    print(f"{'model':9s} {'dim':>3s} {'side':>6s} {'batch':>5s} {'ms':>9s} {'ms/sample':>9s}")
    for name in models:
        for ndim, sides in SIDES.items():
            try:
                arguments = get_architecture(name).default_arguments(ndim, "periodic")
            except ValueError:
                continue  # the model has no variant of this dimension
            model = make_config(name, arguments).build().to(device).eval()
            for side in sides:
                for batch in batches:
                    x = torch.randn(batch, 1, *(side,) * ndim, device=device)
                    try:
                        ms = latency_ms(model, x, calls)
                    except RuntimeError as exc:  # out of memory at the largest sizes
                        print(f"{name:9s} {ndim:3d} {side:6d} {batch:5d}  failed: {str(exc).splitlines()[0]}")
                        continue
                    rows.append({"model": name, "dim": ndim, "side": side, "batch": batch, "ms": ms})
                    print(f"{name:9s} {ndim:3d} {side:6d} {batch:5d} {ms:9.2f} {ms / batch:9.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ARCHITECTURES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--side", type=int, default=64, help="grid side of the served-against-eager table")
    parser.add_argument("--rounds", type=int, default=7, help="alternated calls per side of that table")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default="bench/results/operators.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()  # the replica's allocator settings, for both sides
    device, device_name = resolve_device(args.device)
    models = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    print(f"{device_name}, torch threads {torch.get_num_threads()}")
    served = compare(models, args.side, batches, args.rounds, device)
    rows = sweep(models, batches, args.calls, device) if args.sweep else []
    payload = {"device": device_name, "threads": torch.get_num_threads(), "args": vars(args)}
    write_results(args.out, {**payload, "served_against_eager": served, "rows": rows})


if __name__ == "__main__":
    main()
