"""Serving latency: gRPC ``Solve`` through Ray Serve next to in-process ``predict``, measured in one run.

Usage: ``python bench/serving.py [--repo models] [--model darcy-fno] [--calls 100] [--out FILE]``
(``make bench``). Prints a table and writes JSON (default ``bench/results/serving.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import time
from pathlib import Path

import numpy as np
import torch

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.serving import server
from pdeserve.serving.client import SolverClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timings(call, calls: int, warmup: int = 5) -> np.ndarray:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e3)
    return np.asarray(samples)


def _summary(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="models")
    parser.add_argument("--model", default="darcy-fno")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--out", default="bench/results/serving.json")
    args = parser.parse_args()

    surrogate = load_model(args.repo, args.model)
    side = surrogate.config["training_resolution"][0]
    a = darcy_sample(DarcyParameters(), side, np.random.default_rng(0))["a"].astype(np.float32)
    local = _summary(_timings(lambda: surrogate.predict({"a": a}), args.calls))

    port = _free_port()
    started = time.perf_counter()
    server.start(args.repo, grpc_port=port, http_port=_free_port())
    startup_s = time.perf_counter() - started
    try:
        replica_ms: list[float] = []  # time inside the replica's predict, as the server reports it

        def solve() -> None:
            replica_ms.append(client.solve_response(args.model, {"a": a}).inference_ms)

        with SolverClient(f"127.0.0.1:{port}") as client:
            remote = _summary(_timings(solve, args.calls))
    finally:
        server.stop()

    result = {
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
        "model": args.model,
        "resolution": side,
        "batch": 1,
        "calls": args.calls,
        "serve_startup_s": startup_s,
        "predict": local,
        "grpc_solve": remote,
        "replica_predict": _summary(np.asarray(replica_ms[-args.calls :])),
        "p50_ratio_solve_over_predict": remote["p50_ms"] / local["p50_ms"],
    }
    print(f"{'path':<28}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'in-process predict':<28}{local['p50_ms']:>10.2f}{local['p99_ms']:>10.2f}")
    print(f"{'gRPC Solve (Ray Serve)':<28}{remote['p50_ms']:>10.2f}{remote['p99_ms']:>10.2f}")
    inside = result["replica_predict"]
    print(f"{'  of which predict in replica':<28}{inside['p50_ms']:>10.2f}{inside['p99_ms']:>10.2f}")
    ratio = result["p50_ratio_solve_over_predict"]
    print(f"p50 ratio Solve/predict: {ratio:.2f}; serve start-up {startup_s:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
