"""The C++ client example (examples/cpp): build it with CMake against the system gRPC, run its simulation
loop against the session's live server, and check its numbers against the Python client's."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ports import free_port

from pdeserve.datagen.darcy import solve_darcy
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.serving.client import SolverClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpp"
MODEL = "darcy-fno"
APT = (
    "apt-get install build-essential cmake pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler "
    "protobuf-compiler-grpc"
)

pytestmark = pytest.mark.ray


def missing_toolchain() -> list[str]:
    """What the example's build needs and this machine lacks, by name."""
    missing = [tool for tool in ("cmake", "protoc", "grpc_cpp_plugin") if shutil.which(tool) is None]
    cxx = shlex.split(os.environ.get("CXX", ""))[:1] or ["c++", "g++", "clang++"]
    if not any(shutil.which(c) for c in cxx):
        missing.append(f"a C++ compiler ({' / '.join(cxx)})")
    if shutil.which("pkg-config"):
        for module in ("grpc++", "protobuf"):
            if subprocess.run(["pkg-config", "--exists", module], check=False).returncode != 0:
                missing.append(f"the {module} development files (pkg-config module {module})")
    else:
        include_dirs = [Path("/usr/include"), Path("/usr/local/include")]
        for header in ("grpcpp/grpcpp.h", "google/protobuf/message.h"):
            if not any((d / header).is_file() for d in include_dirs):
                missing.append(f"{header} (and pkg-config to look further)")
    return missing


def build(source: Path, build_dir: Path) -> subprocess.CompletedProcess:
    configure = subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build_dir)], capture_output=True, text=True, check=False
    )
    if configure.returncode != 0:
        return configure
    jobs = str(min(2, os.cpu_count() or 1))
    return subprocess.run(
        ["cmake", "--build", str(build_dir), "--parallel", jobs], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="session")
def solve_loop(request, tmp_path_factory) -> Path:
    """The built ``solve_loop`` binary. The build folder lives in pytest's cache when there is one, so
    later sessions only rebuild what changed instead of building it all again."""
    missing = missing_toolchain()
    if missing:
        pytest.skip(f"C++ toolchain for examples/cpp missing: {', '.join(missing)} (Debian/Ubuntu: {APT})")
    cache = getattr(request.config, "cache", None)
    build_dir = cache.mkdir("cpp-example-build") if cache else tmp_path_factory.mktemp("cpp-example-build")
    done = build(EXAMPLE, build_dir)
    if done.returncode != 0 and (build_dir / "CMakeCache.txt").exists():
        shutil.rmtree(build_dir)  # a stale cache (moved checkout, another compiler): start afresh once
        build_dir.mkdir()
        done = build(EXAMPLE, build_dir)
    assert done.returncode == 0, (
        f"building examples/cpp failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    binary = build_dir / "solve_loop"
    assert binary.is_file()
    return binary


def coefficient(n: int, step: int) -> np.ndarray:
    """The field solve_loop sends at ``step`` (see ``coefficient`` in solve_loop.cpp)."""
    i, j = np.indices((n, n))
    width, shift = max(1, n // 4), max(1, n // 16)
    return np.where((2 * i + j + step * shift) // width % 2 == 0, 12.0, 3.0).astype(np.float32)


def run(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, check=False)


def records(stdout: str, first_key: str) -> list[dict[str, str]]:
    """The ``key=value ...`` lines of solve_loop's output that start with ``first_key=``."""
    return [
        dict(token.split("=", 1) for token in line.split())
        for line in stdout.splitlines()
        if line.startswith(f"{first_key}=")
    ]


@pytest.fixture(scope="module")
def client(grpc_target):
    with SolverClient(grpc_target, timeout=60) as c:
        yield c


@pytest.mark.parametrize("n", [64, 96])
def test_loop_returns_physical_solutions_equal_to_the_python_clients(
    solve_loop, grpc_target, client, tmp_path, n
):
    steps = 5
    done = run(
        solve_loop,
        *("--target", grpc_target, "--model", MODEL, "--steps", str(steps), "--resolution", str(n)),
        *("--deadline-ms", "10000", "--dump-dir", str(tmp_path)),
    )
    assert done.returncode == 0, done.stderr
    lines = records(done.stdout, "step")
    assert [int(r["step"]) for r in lines] == list(range(1, steps + 1))
    version = client.get_model(MODEL).version
    [summary] = records(done.stdout, "steps")
    assert int(summary["steps"]) == steps
    assert 0 < float(summary["p50_ms"]) <= float(summary["max_ms"])
    for step, line in enumerate(lines, start=1):
        a = coefficient(n, step)
        expected = client.solve(MODEL, {"a": a})["u"]
        # the whole field (dumped as raw float32) and the statistics C++ printed
        received = np.fromfile(tmp_path / f"u_step{step}.f32", dtype="<f4").reshape(n, n)
        np.testing.assert_allclose(received, expected, atol=1e-5, rtol=0)
        assert line["version"] == version
        printed = {k: float(line[f"u_{k}"]) for k in ("min", "max", "mean", "center")}
        stats = {"min": expected.min(), "max": expected.max(), "mean": expected.mean()}
        stats["center"] = expected[n // 2, n // 2]
        assert printed == pytest.approx(stats, rel=1e-5, abs=1e-9)
        assert float(line["latency_ms"]) > 0
        # physics: -div(a grad u) = 1, u = 0 on the boundary, a in [3, 12]: u > 0 inside, with a peak
        # between 1/12 and 1/3 of the a = 1 peak 0.0737, and the surrogate near the classical solver
        assert 5e-3 < printed["max"] < 5e-2 and printed["mean"] > 0
        margin = n // 8
        assert expected[margin:-margin, margin:-margin].min() > 0
        assert printed["min"] > -0.05 * printed["max"]
        reference = solve_darcy(a.astype(np.float64), 1.0, UnitSquareGrid(n))
        assert np.linalg.norm(expected - reference) / np.linalg.norm(reference) < 0.1
    # the coefficient changes from step to step, and so does u
    assert len({line["u_center"] for line in lines}) > 1


def test_loop_states_the_error_it_accepts_and_prints_the_path_that_answered(solve_loop, grpc_target, client):
    """``--max-error``: the bundled model's ledger routes each step to the cheapest path predicted to meet
    it, and the example prints that path, its rung and its estimate."""
    level = 0.1
    done = run(
        solve_loop, "--target", grpc_target, "--model", MODEL, "--steps", "2", "--max-error", str(level)
    )
    assert done.returncode == 0, done.stderr
    lines = records(done.stdout, "step")
    assert len(lines) == 2
    for line in lines:
        assert line["path"] in ("SURROGATE", "CLASSICAL")
        assert float(line["estimate"]) <= level
        assert (line["rung"] == "-") == (line["path"] == "SURROGATE")
    refused = run(
        solve_loop, "--target", grpc_target, "--model", MODEL, "--steps", "1", "--max-error", "1e-9"
    )
    assert refused.returncode == 1
    assert (
        "step 1: Solve failed: OUT_OF_RANGE (11): max_error 1e-09 is below the best error" in refused.stderr
    )
    usage = run(solve_loop, "--target", grpc_target, "--method", "classical")
    assert usage.returncode == 2 and "--method needs --max-error" in usage.stderr


def test_bad_request_prints_invalid_argument_and_the_next_call_succeeds(solve_loop, grpc_target):
    done = run(solve_loop, "--target", grpc_target, "--model", MODEL, "--steps", "2", "--bad-request")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    [bad] = [i for i, line in enumerate(lines) if line.startswith("bad_request ")]
    assert "status=INVALID_ARGUMENT (3):" in lines[bad]
    assert "must have rank 2 (x, y) or 3 (batch, x, y), got shape (4096,)" in lines[bad]
    assert [line.split()[0] for line in lines[bad + 1 :]] == ["step=1", "step=2", "steps=2"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "nope"], "GetModel(nope) failed: NOT_FOUND (5): unknown model 'nope'"),
        (["--resolution", "8"], "step 1: Solve failed: INVALID_ARGUMENT (3): "),
        (["--target", "UNREACHABLE"], "GetModel(darcy-fno) failed: UNAVAILABLE (14): "),
    ],
    ids=["unknown model", "grid too small", "no server"],
)
def test_a_failed_call_prints_its_status_and_exits_1(solve_loop, grpc_target, args, expected):
    if args == ["--target", "UNREACHABLE"]:
        args = ["--target", f"127.0.0.1:{free_port()}"]
    done = run(solve_loop, "--target", grpc_target, "--model", MODEL, "--deadline-ms", "5000", *args)
    assert done.returncode == 1
    assert expected in done.stderr
    assert not records(done.stdout, "step")
