"""``pdeserve solve`` on a client-only install (``pip install 'pdeserve[client]'``): the base dependencies
(numpy, grpcio, grpcio-health-checking, protobuf) and nothing of the server extra.

Each test runs the ``pdeserve`` entry point in a fresh interpreter whose imports of anything outside the
standard library and those dependencies fail, as they do where the server extra is not installed.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Top-level modules of the client install: pdeserve itself and its base dependencies.
CLIENT_MODULES = ("pdeserve", "numpy", "grpc", "grpc_health", "google", "typing_extensions")

CLIENT_ONLY = f"""
import importlib.abc
import sys

class ServerExtraMissing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top.startswith("_") or top in {CLIENT_MODULES!r}:
            return None
        raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, ServerExtraMissing())
from pdeserve.cli import main

sys.exit(main(sys.argv[1:]))
"""


def client_only(*args: str) -> subprocess.CompletedProcess:
    """``pdeserve ARGS`` where only the client install's modules import."""
    return subprocess.run(
        [sys.executable, "-c", CLIENT_ONLY, *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("blocked", ["torch", "ray", "h5py", "scipy", "yaml", "safetensors"])
def test_the_harness_blocks_the_server_extra(blocked):
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_ONLY.replace("from pdeserve.cli import main", f"import {blocked}")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert f"No module named '{blocked}'" in done.stderr


def test_solve_help():
    done = client_only("solve", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: pdeserve solve" in done.stdout


def test_unreachable_server_is_one_line(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.zeros((16, 16), dtype=np.float32))
    done = client_only(
        "solve", "--model", "darcy-fno", "--input", str(tmp_path / "a.npy"), "--target", "127.0.0.1:1"
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pdeserve: error: UNAVAILABLE"), lines[0]
    for word in ("Traceback", "ImportError", "ModuleNotFoundError"):
        assert word not in done.stderr


def test_hdf5_input_says_what_to_install(tmp_path: Path):
    (tmp_path / "darcy64.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    done = client_only(
        "solve", "--model", "darcy-fno", "--input", str(tmp_path / "darcy64.h5"), "--target", "127.0.0.1:1"
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pdeserve: error: reading darcy64.h5 as a pdeserve HDF5 dataset needs h5py")
    assert "pip install 'pdeserve[server]'" in lines[0]
    assert "UNAVAILABLE" not in lines[0]  # said before connecting
    assert "Traceback" not in done.stderr
