"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``: ``import common``)."""

from __future__ import annotations

import json
import platform
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeserve.serving.lifecycle import SERVE_REPLICA_PORTS


def resolve_device(choice: str) -> tuple[str, str]:
    """``("cuda"|"cpu", human-readable device name)`` for ``--device auto|cpu|cuda``."""
    device = choice if choice != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU"
    return device, name


def write_results(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a benchmark's JSON results, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def free_port(taken: set[int] | None = None) -> int:
    """A free TCP port on the loopback interface, outside Ray Serve's replica ranges (Serve could give it
    to a replica between the pick and the start) and ``taken`` (which gets it)."""
    taken = set() if taken is None else taken
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in taken and not any(port in span for span in SERVE_REPLICA_PORTS.values()):
            taken.add(port)
            return port


def save_figure(figure: Any, path: str | Path) -> None:
    """Lay out, write (110 dpi, creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def summary(ms: np.ndarray) -> dict[str, float]:
    """p50, p99 and mean of latencies in milliseconds (NaN when there are none)."""
    if len(ms) == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }
