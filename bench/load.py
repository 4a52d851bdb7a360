"""Soak: concurrent clients calling ``Solve`` on a mix of models for a fixed time, through Ray Serve.

A fresh repository holds the bundled ``darcy-fno`` and a small TFNO trained here on fresh Darcy data
(``darcy-tfno``); ``--clients`` threads each loop for ``--duration`` seconds, picking a model and a batch
size (1 or 4) at random per call. Every answer is checked for its shape and finiteness; anything but OK
is an unexpected error. Prints requests, solutions per second, p50 / p99 latency overall and per model,
and errors by status code; writes JSON (default ``bench/results/load.json``).

Usage: ``python bench/load.py [--clients 16] [--duration 60] [--repo models]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import free_port, summary, write_results

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.serving import server
from pdeserve.serving.client import SolverClient, SolverError

MODELS = ("darcy-fno", "darcy-tfno")


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
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    fields = np.stack([darcy_sample(DarcyParameters(), 64, rng)["a"] for _ in range(16)]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), args.repo)
        port = free_port()
        server.start(repo, grpc_port=port, http_port=free_port(), metrics_port=None)
        try:
            result = soak(f"127.0.0.1:{port}", args.clients, args.duration, fields)
        finally:
            server.stop()
    print(
        f"{result['clients']} clients, {result['duration_s']:.0f} s: {result['requests']} requests, "
        f"{result['solutions_per_s']:.1f} solutions/s, unexpected errors {result['unexpected_errors']} "
        f"{result['codes']}"
    )
    print(f"{'model':<14}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for model, stats in {"all": result["latency"], **result["per_model"]}.items():
        count = stats.get("requests", result["requests"])
        print(f"{model:<14}{count:>10}{stats['p50_ms']:>10.1f}{stats['p99_ms']:>10.1f}")
    write_results(args.out, result)


if __name__ == "__main__":
    main()
