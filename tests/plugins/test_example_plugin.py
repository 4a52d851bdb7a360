"""The example plugin family (examples/allen-cahn), really installed: pip builds and installs it into a
fresh virtual environment, pdeserve finds it through its entry point, and it goes datagen -> train ->
serve -> Solve with the classical reference."""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from ports import free_ports

from pdeserve.operators.card import FamilySource
from pdeserve.operators.repository import ModelRepository
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.server import HAPROXY_PORTS

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "allen-cahn"
DISTRIBUTION, VERSION = "pdeserve-allen-cahn", "0.1.0"
# Tiny, so the whole path runs in about a minute: 6 samples on 17 x 17 nodes, u0 -> u(1).
DATAGEN = ["--n", "6", "--resolution", "17", "--final-time", "1", "--seed", "3", "--chunk-size", "6"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtual environment holding a real (non-editable) install of the plugin, and pdeserve's
    environment behind it (its site-packages added by a ``.pth`` file, after the venv's own)."""
    folder = tmp_path_factory.mktemp("plugin")
    source = folder / "src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    env = folder / "venv"
    subprocess.run(
        [sys._base_executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env)], check=True
    )
    packages = next((env / "lib").glob("python3*/site-packages"))
    (packages / "pdeserve-env.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages())
    )
    python = env / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        capture_output=True,
    )
    return env


def run(env: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [env / "bin" / "python", *args], check=True, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_the_install_is_the_venvs_own_and_datagen_list_names_its_distribution(venv):
    where = run(venv, "-c", "import pdeserve_allen_cahn; print(pdeserve_allen_cahn.__file__)").stdout
    assert Path(where.strip()).is_relative_to(venv)  # not the source tree, not another environment
    listing = run(venv, "-m", "pdeserve.cli", "datagen", "list").stdout
    line = next(line for line in listing.splitlines() if line.startswith("allen-cahn:"))
    assert f"[from {DISTRIBUTION} {VERSION}]" in line
    assert "--epsilon" in listing and "--refinement" in listing


def test_datagen_train_serve_and_the_reference_through_grpc(venv, tmp_path):
    data, repo = tmp_path / "ac.h5", tmp_path / "models"
    run(venv, "-m", "pdeserve.cli", "datagen", "allen-cahn", *DATAGEN, "--out", str(data), "--quiet")
    run(
        venv,
        *("-m", "pdeserve.cli", "train", "--data", str(data), "--model", "fno", "--repo", str(repo)),
        *("--name", "ac-tiny", "--epochs", "2", "--batch-size", "2", "--validation-samples", "0"),
        *("--arg", "hidden_channels=8", "--arg", "n_modes=[4,4]", "--arg", "n_layers=2", "--quiet"),
    )
    _, card = ModelRepository(repo).card("ac-tiny")
    assert card.pde == "allen-cahn"
    assert card.family == FamilySource(DISTRIBUTION, VERSION)

    with h5py.File(data) as f:
        u0 = np.asarray(f["u0"][:2], dtype=np.float64)
    # The plugin's own solver, in this process (the same package's source).
    sys.path.insert(0, str(PLUGIN))
    try:
        from pdeserve_allen_cahn.family import ALLEN_CAHN
    finally:
        sys.path.remove(str(PLUGIN))
    params = ALLEN_CAHN.parameters_from(card.pde_parameters)
    expected = ALLEN_CAHN.reference(params, {"u0": u0})["u"]

    grpc, http, metrics = free_ports(3)
    haproxy = dict(zip(HAPROXY_PORTS.values(), free_ports(2), strict=True))
    environment = {**os.environ, **{variable: str(port) for (variable, _), port in haproxy.items()}}
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                *(venv / "bin" / "python", "-m", "pdeserve.cli", "serve", "--repo", str(repo)),
                *("--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(metrics)),
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=output,
            env=environment,
        )
    try:
        target = f"127.0.0.1:{grpc}"
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                with SolverClient(target, timeout=5, retries=0) as client:
                    if client.health() == "SERVING":
                        break
            except SolverError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(1)
        with SolverClient(target, timeout=120) as client:
            response = client.solve_response("ac-tiny", {"u0": u0.astype(np.float32)}, reference=True)
            checked = client.solve_checked("ac-tiny", {"u0": u0.astype(np.float32)})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    reference = np.frombuffer(response.reference_outputs["u"].data, dtype="<f4").reshape(2, 17, 17)
    # The server's reference is the plugin's solve of the float32 inputs it received.
    np.testing.assert_allclose(reference, expected, rtol=0, atol=1e-5)
    surrogate = np.frombuffer(response.outputs["u"].data, dtype="<f4").reshape(2, 17, 17)
    error = np.linalg.norm(surrogate - reference) / np.linalg.norm(reference)
    assert response.reference_relative_l2["u"] == pytest.approx(error, rel=1e-3)
    # The AnswerCheck path: one check per sample, the surrogate's answer, scored by the family's
    # two-solution indicator.
    assert [c.path for c in checked.checks] == ["surrogate", "surrogate"]
    assert all(c.indicator is not None and c.indicator > 0 for c in checked.checks)
