"""Serving latency and throughput: gRPC ``Solve`` through Ray Serve next to in-process ``predict``, one run.

Throughput (measured first, so that the replica has run large batches too, as the in-process sweep
has): ``--clients`` concurrent clients sending batch-1 ``Solve`` calls (the server stacks them into
batched forward passes) against in-process ``predict`` at its best batch size (picked from 1..32), in
``--rounds`` alternating rounds of ``--seconds`` each; the ratio of the summed rates (target: served
>= 0.8x the best in-process).
Latency: batch 1, p50 / p99 of ``Solve`` against ``load_model(...).predict`` of the same model in this
process, ``--calls`` of each in alternating blocks of ``--block`` calls (a block of one side, then a
block of the other; each block opened by one uncounted call), so that both see the same machine and
neither pays for the other's idle threads (target: Solve p50 <= 1.25x predict p50). The replica's own
time, ``inference_ms`` (from the request's entry into the replica to its answer), is reported beside, and
a gRPC health check after each Solve: the round trip through Serve with no work in the replica.
The server starts as ``pdeserve serve`` (and ``make serve``) starts it: ``--replicas`` replicas of
``--replica-cpus`` CPUs each, by default from this machine's CPUs by the same rule
(``pdeserve.serving.serve_config.local_scaling``), and this process sets the replicas' malloc
thresholds (serving/allocator.py); ``--target HOST:PORT`` measures a server already running instead
(e.g. ``make serve``).

Usage: ``python bench/serving.py [--repo models] [--model darcy-fno] [--calls 200] [--block 10]
[--clients 16] [--seconds 10] [--rounds 3] [--replicas N] [--replica-cpus N] [--target HOST:PORT]
[--out FILE]``
(``make bench``). Prints tables and writes JSON (default ``bench/results/serving.json``).
"""

from __future__ import annotations

import argparse
import platform
import threading
import time

import numpy as np
import torch
from common import free_port, summary, write_results

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.serving import server
from pdeserve.serving.allocator import retain_freed_memory
from pdeserve.serving.client import SolverClient
from pdeserve.serving.serve_config import local_scaling, machine_cpus


def batched_throughput(surrogate, fields: np.ndarray, batch: int, seconds: float) -> float:
    """In-process solutions per second of ``predict`` at ``batch`` for about ``seconds``."""
    x = fields[:batch]
    surrogate.predict({"a": x})  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        surrogate.predict({"a": x})
        done += batch
    return done / (time.perf_counter() - started)


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
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--block", type=int, default=10, help="latency calls per alternating block")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    parser.add_argument("--replicas", type=int, help="default: as pdeserve serve on this machine")
    parser.add_argument(
        "--replica-cpus", type=float, help="CPUs (torch threads) of each replica (default: as pdeserve serve)"
    )
    parser.add_argument("--target", help="HOST:PORT of a running server to measure instead of starting one")
    parser.add_argument("--out", default="bench/results/serving.json")
    args = parser.parse_args()
    if min(args.calls, args.block, args.clients, args.rounds, args.replicas or 1) < 1:
        parser.error("--calls, --block, --clients, --rounds and --replicas must be at least 1")
    scaling = local_scaling(machine_cpus(), args.replicas, args.replica_cpus)

    retain_freed_memory()  # the replica's allocator settings, so that both sides allocate alike
    surrogate = load_model(args.repo, args.model)
    side = surrogate.card.training_resolution[0]
    rng = np.random.default_rng(0)
    fields = np.stack([darcy_sample(DarcyParameters(), side, rng)["a"] for _ in range(32)]).astype(np.float32)
    a = fields[0]
    sweep = {b: batched_throughput(surrogate, fields, b, seconds=2.0) for b in (1, 2, 4, 8, 16, 32)}
    best_batch = max(sweep, key=sweep.get)

    started = time.perf_counter()
    if args.target is None:
        port = free_port()
        server.start(
            args.repo,
            grpc_port=port,
            http_port=free_port(),
            metrics_port=free_port(),
            replica_cpus=scaling.num_cpus,
            replicas=scaling.max_replicas,
        )
    target = args.target or f"127.0.0.1:{port}"
    startup_s = time.perf_counter() - started
    local_ms: list[float] = []
    remote_ms: list[float] = []
    replica_ms: list[float] = []  # inference_ms: from the request's entry into the replica to its answer
    floor_ms: list[float] = []  # a health check: the round trip through Serve with no work in the replica
    in_process: list[float] = []
    served: list[float] = []
    try:
        # Throughput first: the replica then has run large batches too, as the in-process sweep has.
        for _ in range(args.rounds):
            in_process.append(batched_throughput(surrogate, fields, best_batch, args.seconds))
            served.append(served_throughput(target, args.model, fields, args.clients, args.seconds))
        with SolverClient(target) as client:
            for _ in range(5):  # warm-up of both paths
                surrogate.predict({"a": a})
                client.solve_response(args.model, {"a": a})
            # Alternating blocks, each opened by one uncounted call: a process's idle OpenMP threads
            # spin for several ms after its last parallel region (libgomp's default), stealing the
            # cores from the other process's next call; call-by-call alternation charged that spin to
            # whichever side came second.
            for done in range(0, args.calls, args.block):
                block = min(args.block, args.calls - done)
                surrogate.predict({"a": a})
                for _ in range(block):
                    tick = time.perf_counter()
                    surrogate.predict({"a": a})
                    local_ms.append((time.perf_counter() - tick) * 1e3)
                client.solve_response(args.model, {"a": a})
                for _ in range(block):
                    tick = time.perf_counter()
                    replica_ms.append(client.solve_response(args.model, {"a": a}).inference_ms)
                    remote_ms.append((time.perf_counter() - tick) * 1e3)
                    tick = time.perf_counter()
                    client.health()
                    floor_ms.append((time.perf_counter() - tick) * 1e3)
    finally:
        if args.target is None:
            server.stop()

    local, remote = summary(np.asarray(local_ms)), summary(np.asarray(remote_ms))
    result = {
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads in-process",
        "target": args.target or "started here",
        "replicas": None if args.target else scaling.max_replicas,
        "replica_cpus": None if args.target else scaling.num_cpus,
        "model": args.model,
        "resolution": side,
        "calls": args.calls,
        "serve_startup_s": startup_s,
        "predict": local,
        "grpc_solve": remote,
        "replica_predict": summary(np.asarray(replica_ms)),
        "grpc_health_check": summary(np.asarray(floor_ms)),
        "p50_ratio_solve_over_predict": remote["p50_ms"] / local["p50_ms"],
        "in_process_sweep_solutions_per_s": sweep,
        "best_batch": best_batch,
        "in_process_solutions_per_s_by_round": in_process,
        "served_clients": args.clients,
        "served_solutions_per_s_by_round": served,
        "throughput_ratio_served_over_best_in_process": sum(served) / sum(in_process),
    }
    print(f"{'latency, batch 1':<30}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'in-process predict':<30}{local['p50_ms']:>10.2f}{local['p99_ms']:>10.2f}")
    print(f"{'gRPC Solve (Ray Serve)':<30}{remote['p50_ms']:>10.2f}{remote['p99_ms']:>10.2f}")
    inside = result["replica_predict"]
    print(f"{'  of which inside the replica':<30}{inside['p50_ms']:>10.2f}{inside['p99_ms']:>10.2f}")
    floor = result["grpc_health_check"]
    print(f"{'gRPC health check (no work)':<30}{floor['p50_ms']:>10.2f}{floor['p99_ms']:>10.2f}")
    ratio = result["p50_ratio_solve_over_predict"]
    print(f"p50 ratio Solve/predict: {ratio:.2f} (target <= 1.25); serve start-up {startup_s:.1f} s")
    layout = f"{args.target}" if args.target else f"{scaling.max_replicas} x {scaling.num_cpus:g} CPU"
    rates = ", ".join(f"{b}: {r:.0f}" for b, r in sweep.items())
    print(f"in-process solutions/s by batch size (2 s each): {rates}")
    rounds = "; ".join(f"{p:.0f} vs {q:.0f}" for p, q in zip(in_process, served, strict=True))
    print(
        f"in-process at batch {best_batch} vs {args.clients} concurrent clients through Ray Serve "
        f"({layout}), "
        f"solutions/s by round: {rounds}; ratio served / in-process: "
        f"{result['throughput_ratio_served_over_best_in_process']:.2f} (target >= 0.8)"
    )
    write_results(args.out, result)


if __name__ == "__main__":
    main()
