"""Serving latency and throughput: gRPC ``Solve`` through Ray Serve next to in-process ``predict``, one run.

Latency: batch 1, sequential calls, p50 / p99 of ``Solve`` against ``load_model(...).predict`` of the same
model in this process (target: Solve p50 <= 1.25x predict p50).
Throughput: ``--clients`` concurrent clients sending batch-1 ``Solve`` calls (the server stacks them with
``@serve.batch``) against the best in-process ``predict`` throughput over batch sizes 1..32 (target:
served >= 0.8x the best in-process).

Usage: ``python bench/serving.py [--repo models] [--model darcy-fno] [--calls 100] [--clients 16]
[--seconds 20] [--out FILE]`` (``make bench``). Prints tables and writes JSON (default
``bench/results/serving.json``).
"""

from __future__ import annotations

import argparse
import platform
import threading
import time

import numpy as np
import torch
from common import free_port, summary, timings, write_results

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.serving import server
from pdeserve.serving.client import SolverClient


def batched_throughput(surrogate, fields: np.ndarray, batches: list[int], calls: int) -> dict[int, float]:
    """In-process solutions per second of ``predict`` at each batch size."""
    result = {}
    for batch in batches:
        x = fields[:batch]
        ms = timings(lambda x=x: surrogate.predict({"a": x}), calls, warmup=2)
        result[batch] = batch * calls / (ms.sum() / 1e3)
    return result


def served_throughput(target: str, model: str, fields: np.ndarray, clients: int, seconds: float) -> float:
    """Solutions per second of ``clients`` threads each sending batch-1 ``Solve`` calls for ``seconds``."""
    done = [0] * clients
    stop_at = time.monotonic() + seconds

    def client(i: int) -> None:
        with SolverClient(target) as c:
            c.solve(model, {"a": fields[i % len(fields)]})  # connect and warm up before counting
            while time.monotonic() < stop_at:
                c.solve(model, {"a": fields[i % len(fields)]})
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="models")
    parser.add_argument("--model", default="darcy-fno")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the concurrent load")
    parser.add_argument("--out", default="bench/results/serving.json")
    args = parser.parse_args()

    surrogate = load_model(args.repo, args.model)
    side = surrogate.config["training_resolution"][0]
    rng = np.random.default_rng(0)
    fields = np.stack([darcy_sample(DarcyParameters(), side, rng)["a"] for _ in range(32)]).astype(np.float32)
    a = fields[0]
    local = summary(timings(lambda: surrogate.predict({"a": a}), args.calls))
    in_process = batched_throughput(surrogate, fields, [1, 2, 4, 8, 16, 32], calls=10)
    best_batch = max(in_process, key=in_process.get)

    port = free_port()
    started = time.perf_counter()
    server.start(args.repo, grpc_port=port, http_port=free_port())
    startup_s = time.perf_counter() - started
    try:
        replica_ms: list[float] = []  # time inside the replica's predict, as the server reports it

        def solve() -> None:
            replica_ms.append(client.solve_response(args.model, {"a": a}).inference_ms)

        with SolverClient(f"127.0.0.1:{port}") as client:
            remote = summary(timings(solve, args.calls))
        served = served_throughput(f"127.0.0.1:{port}", args.model, fields, args.clients, args.seconds)
    finally:
        server.stop()

    result = {
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads in-process",
        "model": args.model,
        "resolution": side,
        "calls": args.calls,
        "serve_startup_s": startup_s,
        "predict": local,
        "grpc_solve": remote,
        "replica_predict": summary(np.asarray(replica_ms[-args.calls :])),
        "p50_ratio_solve_over_predict": remote["p50_ms"] / local["p50_ms"],
        "in_process_solutions_per_s": in_process,
        "served_clients": args.clients,
        "served_solutions_per_s": served,
        "throughput_ratio_served_over_best_in_process": served / in_process[best_batch],
    }
    print(f"{'latency, batch 1':<30}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'in-process predict':<30}{local['p50_ms']:>10.2f}{local['p99_ms']:>10.2f}")
    print(f"{'gRPC Solve (Ray Serve)':<30}{remote['p50_ms']:>10.2f}{remote['p99_ms']:>10.2f}")
    inside = result["replica_predict"]
    print(f"{'  of which predict in replica':<30}{inside['p50_ms']:>10.2f}{inside['p99_ms']:>10.2f}")
    ratio = result["p50_ratio_solve_over_predict"]
    print(f"p50 ratio Solve/predict: {ratio:.2f} (target <= 1.25); serve start-up {startup_s:.1f} s")
    rates = ", ".join(f"{b}: {r:.0f}" for b, r in in_process.items())
    print(f"in-process solutions/s by batch size: {rates}")
    print(
        f"{args.clients} concurrent clients through Ray Serve: {served:.0f} solutions/s; ratio to the best "
        f"in-process ({in_process[best_batch]:.0f} at batch {best_batch}): "
        f"{result['throughput_ratio_served_over_best_in_process']:.2f} (target >= 0.8)"
    )
    write_results(args.out, result)


if __name__ == "__main__":
    main()
