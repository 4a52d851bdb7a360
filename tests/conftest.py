"""Shared fixtures: the bundled model repository and one live Ray Serve gRPC server per session."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_REPO = ROOT / "models"
BUNDLED_MODEL = "darcy-fno"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bundled_repo() -> Path:
    assert (BUNDLED_REPO / BUNDLED_MODEL).is_dir(), "the bundled model is missing: run `make bundled-model`"
    return BUNDLED_REPO


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Port where the session's Ray instance exports Prometheus metrics."""
    return free_port()


@pytest.fixture(scope="session")
def grpc_target(bundled_repo: Path, metrics_port: int) -> str:
    """``HOST:PORT`` of a real Ray Serve application serving the bundled repository over gRPC."""
    from pdeserve.serving import server

    port = free_port()
    server.start(bundled_repo, grpc_port=port, http_port=free_port(), metrics_port=metrics_port)
    yield f"127.0.0.1:{port}"
    server.stop()
