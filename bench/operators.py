"""Inference latency of every registered operator per resolution, at batch 1 and batch 32.

Usage: ``python bench/operators.py [--models fno,tfno,mgno,galerkin] [--device auto] [--calls 10]``.
Untrained models built from the registry's defaults for the grid (latency does not depend on the
weights). 2D models at 64, 128 and 256 points per side; 1D models at 1024 to 16384 points, which also
shows how each cost grows with the number of points (the Galerkin attention is linear). Prints a
table of median milliseconds and writes JSON (default ``bench/results/operators.json``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import resolve_device, write_results

from pdeserve.operators.registry import ARCHITECTURES, get_architecture, make_config

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ARCHITECTURES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--out", default="bench/results/operators.json")
    args = parser.parse_args()
    device, device_name = resolve_device(args.device)
    rows = []
    print(f"median ms per call, {device_name}, torch threads {torch.get_num_threads()}")
    print(f"{'model':9s} {'dim':>3s} {'side':>6s} {'batch':>5s} {'ms':>9s} {'ms/sample':>9s}")
    for name in args.models.split(","):
        for ndim, sides in SIDES.items():
            try:
                arguments = get_architecture(name).default_arguments(ndim, "periodic")
            except ValueError:
                continue  # the model has no variant of this dimension
            model = make_config(name, arguments).build().to(device).eval()
            for side in sides:
                for batch in (int(b) for b in args.batches.split(",")):
                    x = torch.randn(batch, 1, *(side,) * ndim, device=device)
                    try:
                        ms = latency_ms(model, x, args.calls)
                    except RuntimeError as exc:  # out of memory at the largest sizes
                        print(f"{name:9s} {ndim:3d} {side:6d} {batch:5d}  failed: {str(exc).splitlines()[0]}")
                        continue
                    rows.append({"model": name, "dim": ndim, "side": side, "batch": batch, "ms": ms})
                    print(f"{name:9s} {ndim:3d} {side:6d} {batch:5d} {ms:9.2f} {ms / batch:9.3f}", flush=True)
    write_results(args.out, {"device": device_name, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
