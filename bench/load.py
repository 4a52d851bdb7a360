"""Soak: concurrent clients calling ``Solve`` on a mix of models for a fixed time, through Ray Serve.

A fresh repository holds the bundled ``darcy-fno`` and a small TFNO trained here on fresh Darcy data
(``darcy-tfno``); ``--clients`` threads each loop for ``--duration`` seconds, picking a model and a batch
size (1 or 4) at random per call. Every answer is checked for its shape and finiteness; anything but OK
is an unexpected error. The resident memory of every replica is sampled each second; its growth is the
median of the last fifth of the soak minus the median of the first fifth after a warm-up (model loads
and allocator pools fill then). Prints requests, solutions per second, p50 / p99 latency overall and per
model, errors by status code and memory; writes JSON (default ``bench/results/load.json``). Exits
non-zero on any unexpected error or a memory growth above ``--max-growth-mb``.

Usage: ``python bench/load.py [--clients 16] [--duration 60] [--repo models] [--max-growth-mb 150]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import ray
from common import free_port, summary, write_results

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.serving import server
from pdeserve.serving.client import SolverClient, SolverError

MODELS = ("darcy-fno", "darcy-tfno")
REPLICA_PREFIX = "SERVE_REPLICA::pdeserve#SolverService#"


def _rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


class ReplicaMemory:
    """Samples every live replica's resident memory once a second on a thread, while in use."""

    def __init__(self, period_s: float = 1.0) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, total MB over replicas)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> list[int]:
        # Replica actors are named; each reports its own process id (the server runs without a dashboard).
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        replicas = [ray.get_actor(n, namespace="serve") for n in names if n.startswith(REPLICA_PREFIX)]
        return ray.get([r.__ray_call__.remote(lambda _: os.getpid()) for r in replicas], timeout=30)

    def _run(self) -> None:
        started = time.monotonic()
        pids = self._pids()
        while not self._stop.wait(self.period_s):
            sizes = [_rss_mb(pid) for pid in pids]
            if None in sizes:  # a replica was replaced: find the new one
                pids = self._pids()
                continue
            self.samples.append((time.monotonic() - started, sum(sizes)))

    def __enter__(self) -> ReplicaMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, warm_up_s: float) -> dict[str, float]:
        """Start, end, peak and growth of the replicas' memory in MB after ``warm_up_s``."""
        mb = np.asarray([m for t, m in self.samples if t >= warm_up_s])
        if len(mb) < 5:
            return {
                "samples": float(len(mb)),
                "start_mb": float("nan"),
                "end_mb": float("nan"),
                "peak_mb": float("nan"),
                "growth_mb": float("nan"),
            }
        fifth = max(1, len(mb) // 5)
        start, end = float(np.median(mb[:fifth])), float(np.median(mb[-fifth:]))
        return {
            "samples": float(len(mb)),
            "start_mb": start,
            "end_mb": end,
            "peak_mb": float(mb.max()),
            "growth_mb": end - start,
        }


def _repository(folder: Path, bundled: Path) -> Path:
    """The bundled FNO plus a TFNO trained for a few epochs (a second, different model to mix in)."""
    repo = folder / "repo"
    shutil.copytree(bundled / "darcy-fno", repo / "darcy-fno")
    cli = [sys.executable, "-m", "pdeserve.cli"]
    data = folder / "darcy.h5"
    generate = ["datagen", "darcy", "--n", "120", "--resolution", "64", "--out", str(data)]
    train = ["train", "--data", str(data), "--model", "tfno", "--repo", str(repo), "--name", "darcy-tfno"]
    subprocess.run([*cli, *generate], check=True)
    subprocess.run([*cli, *train, "--epochs", "3", "--quiet"], check=True)
    return repo


def soak(target: str, clients: int, duration: float, fields: np.ndarray) -> dict:
    """Run ``clients`` threads for ``duration`` seconds; latencies and outcomes of every call."""
    latencies: dict[str, list[float]] = {m: [] for m in MODELS}
    codes: Counter[str] = Counter()
    solutions = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with SolverClient(target, timeout=30, retries=0) as c:
            while time.monotonic() < stop_at:
                model, batch = MODELS[rng.integers(len(MODELS))], int(rng.choice([1, 4]))
                x = fields[rng.integers(len(fields) - batch) :][:batch] if batch > 1 else fields[0]
                started = time.perf_counter()
                try:
                    u = c.solve(model, {"a": x})["u"]
                    ok = u.shape == x.shape and bool(np.isfinite(u).all())
                    code = "OK" if ok else "WRONG_ANSWER"
                except SolverError as exc:
                    code = exc.code.name
                elapsed = (time.perf_counter() - started) * 1e3
                with lock:
                    codes[code] += 1
                    if code == "OK":
                        latencies[model].append(elapsed)
                        solutions[model] += batch

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    every = np.concatenate([np.asarray(v) for v in latencies.values()])
    return {
        "clients": clients,
        "duration_s": wall,
        "requests": sum(codes.values()),
        "codes": dict(codes),
        "unexpected_errors": sum(n for code, n in codes.items() if code != "OK"),
        "solutions_per_s": sum(solutions.values()) / wall,
        "latency": summary(every),
        "per_model": {m: {"requests": len(v), **summary(np.asarray(v))} for m, v in latencies.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--repo", type=Path, default=Path("models"), help="holds the bundled darcy-fno")
    parser.add_argument("--out", default="bench/results/load.json")
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds of load before memory is judged")
    parser.add_argument(
        "--max-growth-mb",
        type=float,
        default=150.0,
        help="fail when the replicas' memory grows more than this",
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    fields = np.stack([darcy_sample(DarcyParameters(), 64, rng)["a"] for _ in range(16)]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), args.repo)
        port = free_port()
        server.start(repo, grpc_port=port, http_port=free_port(), metrics_port=None)
        try:
            with ReplicaMemory() as memory:
                result = soak(f"127.0.0.1:{port}", args.clients, args.duration, fields)
        finally:
            server.stop()
    result["replica_memory"] = memory.report(args.warm_up)
    print(
        f"{result['clients']} clients, {result['duration_s']:.0f} s: {result['requests']} requests, "
        f"{result['solutions_per_s']:.1f} solutions/s, unexpected errors {result['unexpected_errors']} "
        f"{result['codes']}"
    )
    print(f"{'model':<14}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for model, stats in {"all": result["latency"], **result["per_model"]}.items():
        count = stats.get("requests", result["requests"])
        print(f"{model:<14}{count:>10}{stats['p50_ms']:>10.1f}{stats['p99_ms']:>10.1f}")
    rss = result["replica_memory"]
    print(
        f"replica memory after {args.warm_up:.0f} s: {rss['start_mb']:.0f} -> {rss['end_mb']:.0f} MB "
        f"(peak {rss['peak_mb']:.0f}, growth {rss['growth_mb']:+.0f} MB, bound {args.max_growth_mb:.0f})"
    )
    write_results(args.out, result)
    failures = []
    if result["unexpected_errors"]:
        failures.append(f"{result['unexpected_errors']} unexpected errors {result['codes']}")
    if not rss["growth_mb"] <= args.max_growth_mb:  # NaN (too few samples) fails too
        failures.append(f"replica memory grew {rss['growth_mb']:.0f} MB (bound {args.max_growth_mb:.0f} MB)")
    if failures:
        sys.exit("load: " + "; ".join(failures))


if __name__ == "__main__":
    main()
