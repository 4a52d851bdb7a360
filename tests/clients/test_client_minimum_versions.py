"""The Python client's declared minimums (pyproject.toml) are what its generated modules need: the
declared versions equal the generated code's own checks, and the client installed at exactly those
versions into a fresh virtual environment imports and calls the session's server."""

from __future__ import annotations

import re
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "protos" / "v1"

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def declared_minimums() -> dict[str, str]:
    """``{distribution: minimum}`` of the base (client) dependencies in pyproject.toml."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for requirement in dependencies:
        name, minimum = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement.strip()).groups()
        found[name] = minimum
    return found


def generated_minimums() -> dict[str, str]:
    """The runtime versions the generated modules check for at import."""
    protobuf = re.search(r"# Protobuf Python Version: ([0-9.]+)", (GENERATED / "solver_pb2.py").read_text())
    grpc = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", (GENERATED / "solver_pb2_grpc.py").read_text())
    return {"protobuf": protobuf.group(1), "grpcio": grpc.group(1)}


def test_declared_minimums_are_what_the_generated_code_needs():
    declared = declared_minimums()
    generated = generated_minimums()
    assert declared["protobuf"] == generated["protobuf"]
    assert declared["grpcio"] == generated["grpcio"]
    # released together with grpcio, and requiring that grpcio and a protobuf 6
    assert declared["grpcio-health-checking"] == generated["grpcio"]


@pytest.mark.ray
def test_client_at_its_declared_minimums_imports_and_calls_a_server(grpc_target, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pins = tmp_path / "minimums.txt"
    pins.write_text("".join(f"{name}=={version}\n" for name, version in declared_minimums().items()))
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--constraint", pins, f"{ROOT}[client]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    script = """
import sys
from importlib.metadata import version

import numpy as np
from pdeserve.serving.client import SolverClient

with SolverClient(sys.argv[1], timeout=60) as client:
    u = client.solve("darcy-fno", {"a": np.full((64, 64), 7.5, np.float32)})["u"]
    info = client.get_model("darcy-fno")
    print(u.shape, u.dtype, info.name, client.health())
print(*(version(d) for d in ("protobuf", "grpcio", "grpcio-health-checking", "numpy")))
"""
    done = subprocess.run(
        [python, "-W", "error", "-c", script, grpc_target], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, versions = done.stdout.splitlines()
    assert first == "(64, 64) float32 darcy-fno SERVING"
    minimums = declared_minimums()
    expected = [minimums[d] for d in ("protobuf", "grpcio", "grpcio-health-checking", "numpy")]
    assert [release(v) for v in versions.split()] == [release(v) for v in expected]


def release(text: str) -> tuple[int, ...]:
    """``1.26`` and ``1.26.0`` alike."""
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
