"""The C library and the Fortran module (clients/): built with CMake from a clean tree, run against the
session's live server, their answers bit-equal to the Python client's; the Fortran layout rule (a(i, j) is
the model's a[i, j], no transpose), the error paths and a buffer too small under AddressSanitizer; the
installed CMake package and pkg-config files.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pdeserve.serving.client import SolverClient

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"
MODEL = "darcy-fno"
APT = (
    "apt-get install build-essential gfortran cmake pkg-config libgrpc++-dev libprotobuf-dev "
    "protobuf-compiler protobuf-compiler-grpc"
)
TOOLS = ("cmake", "pkg-config", "protoc", "grpc_cpp_plugin", "c++", "cc", "gfortran")

# every test here shares the session's server and one build: the "ray" xdist group runs them on one worker
pytestmark = pytest.mark.ray


def missing_toolchain() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if "pkg-config" not in missing:
        for module in ("grpc++", "protobuf"):
            if subprocess.run(["pkg-config", "--exists", module], check=False).returncode != 0:
                missing.append(f"the {module} development files (pkg-config module {module})")
    return missing


def run(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def checked(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="session")
def build(tmp_path_factory) -> Path:
    """The clients project (library, module, examples, the check programs and their AddressSanitizer
    build) configured and built in a fresh folder."""
    missing = missing_toolchain()
    if missing:
        reason = f"C/Fortran toolchain for clients/ missing: {', '.join(missing)} (Debian/Ubuntu: {APT})"
        if os.environ.get("PDESERVE_REQUIRE_CLIENT_TOOLCHAIN"):  # set by .ci/run, which installs it
            pytest.fail(reason)
        pytest.skip(reason)
    build_dir = tmp_path_factory.mktemp("clients-build")
    checked(
        run(
            *("cmake", "-S", CLIENTS, "-B", build_dir),
            *("-DPDESERVE_CHECKS=ON", "-DPDESERVE_ASAN_CHECK=ON"),
            f"-DCMAKE_INSTALL_PREFIX={build_dir / 'prefix'}",
        )
    )
    jobs = str(min(2, os.cpu_count() or 1))
    checked(run("cmake", "--build", build_dir, "--parallel", jobs, timeout=900))
    return build_dir


@pytest.fixture(scope="module")
def client(grpc_target):
    with SolverClient(grpc_target, timeout=60) as c:
        yield c


def records(stdout: str, first_key: str) -> list[dict[str, str]]:
    """The ``key=value ...`` lines of a program's output that start with ``first_key=``."""
    return [
        dict(token.split("=", 1) for token in line.split(" ") if "=" in token)
        for line in stdout.splitlines()
        if line.startswith(f"{first_key}=") or line.startswith(f"{first_key} ")
    ]


def statuses(stdout: str) -> dict[str, tuple[int, str]]:
    """``what status=N name=NAME message=...`` lines as {what: (N, message)}."""
    found = {}
    for line in stdout.splitlines():
        what, _, rest = line.partition(" status=")
        if rest:
            code, _, message = rest.partition(" message=")
            found[what] = (int(code.split()[0]), message)
    return found


def fortran_array(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> np.ndarray:
    """An array a Fortran program wrote (stream access, the first index fastest), same indices."""
    return np.fromfile(path, dtype=dtype).reshape(shape, order="F")


def field(n: int) -> np.ndarray:
    """client_check's non-symmetric field: a[i, j] = 12 where ((2 i + j) // (n // 4)) is even, else 3."""
    i, j = np.indices((n, n))
    return np.where((2 * i + j) // max(1, n // 4) % 2 == 0, 12.0, 3.0).astype(np.float32)


def test_the_library_exports_only_its_c_functions(build):
    symbols = checked(run("nm", "-D", "--defined-only", build / "libpdeserve.so")).stdout.split("\n")
    names = [line.split()[-1] for line in symbols if line.strip()]
    assert names and all(name.startswith("pdeserve_") for name in names), names
    for function in (
        "pdeserve_solve",
        "pdeserve_rollout_next",
        "pdeserve_get_model",
        "pdeserve_answer_check",
    ):
        assert function in names


def test_fortran_fields_reach_the_model_untransposed_and_bit_equal(build, grpc_target, client, tmp_path):
    n = 64
    done = checked(run(build / "client_check", "layout", grpc_target, n, tmp_path))
    a = field(n)
    assert not np.array_equal(a, a.T)
    expected = client.solve(MODEL, {"a": a})["u"]
    received = fortran_array(tmp_path / "u32.f32", (n, n))
    assert received.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(received, expected)
    # the answer to the transposed field is another field: a transpose on the way would show
    assert np.abs(client.solve(MODEL, {"a": a.T})["u"] - expected).max() > 1e-3
    # float64 in, float64 out: the float32 answer widened, bit for bit
    received64 = fortran_array(tmp_path / "u64.f64", (n, n), "<f8")
    np.testing.assert_array_equal(received64, client.solve(MODEL, {"a": a.astype(np.float64)})["u"])
    # a batch has the sample as its first index, as on the wire
    assert records(done.stdout, "batch_rank") == [{"batch_rank": "3", "batch_shape": "3"}]
    assert "batch_shape=3 64 64" in done.stdout and "batch_checks=3" in done.stdout
    stack = np.stack([a, a.T, a[::-1, :]])
    np.testing.assert_array_equal(
        fortran_array(tmp_path / "ubatch.f32", (3, n, n)), client.solve(MODEL, {"a": stack})["u"]
    )


def test_fortran_get_model_matches_the_python_client(build, grpc_target, client):
    done = checked(run(build / "client_check", "model", grpc_target, MODEL))
    info = client.get_model(MODEL)
    lines = done.stdout.splitlines()
    assert f"version={info.version}" in lines and f"pde={info.pde}" in lines
    assert f"min_resolution={info.min_resolution}" in lines
    assert f"max_resolution={info.max_resolution}" in lines
    fields = records(done.stdout, "field")
    expected = [("0", f.name, ",".join(map(str, f.shape))) for f in info.inputs]
    expected += [("1", f.name, ",".join(map(str, f.shape))) for f in info.outputs]
    assert [(f["kind"], f["name"], f["shape"]) for f in fields] == expected
    metrics = {m["name"]: float(m["value"]) for m in records(done.stdout, "metric")}
    assert metrics == dict(info.metrics) and "test_relative_l2" in metrics
    assert statuses(done.stdout)["missing_metric"][0] == 103


def test_fortran_error_paths_give_their_status_and_message(build, grpc_target):
    done = checked(run(build / "client_check", "errors", grpc_target))
    found = statuses(done.stdout)
    code, message = found["unknown_model"]
    assert code == 5 and "NOT_FOUND" in message and "unknown model 'no-such-model'" in message
    code, message = found["wrong_rank"]
    assert code == 3 and "must have rank 2 (x, y) or 3 (batch, x, y), got shape (4096,)" in message
    code, message = found["grid_too_small"]
    assert code == 3 and "grid (8, 8)" in message
    assert found["wrong_field"][0] == 3 and "expects input fields ['a'], got ['b']" in found["wrong_field"][1]
    assert found["bad_tolerance"][0] == 3 and "tolerance" in found["bad_tolerance"][1]
    assert found["missing_output"] == (103, "pdeserve: the answer has no output 'nope'; it has: 'u'")
    proto = (ROOT / "protos" / "src" / "pdeserve" / "v1" / "solver.proto").read_text()
    has_max_error = "double max_error =" in proto
    assert found["max_error"][0] == (0 if has_max_error else 104)
    assert found["after_errors"] == (0, "")


@pytest.mark.parametrize("retries", [0, 2])
def test_fortran_call_to_a_server_that_is_down_is_unavailable_after_the_retries(build, retries):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    done = checked(run(build / "client_check", "unavailable", f"127.0.0.1:{port}", retries, timeout=60))
    code, message = statuses(done.stdout)["down"]
    assert code == 14 and message.startswith("UNAVAILABLE: Solve(darcy-fno)")
    [timing] = records(done.stdout, "elapsed_s")
    assert timing["untouched"] == "T"
    if retries:
        assert f"(after {retries + 1} attempts)" in message
        assert float(timing["elapsed_s"]) >= 0.1 + 0.2  # backoff 0.1 s, then 0.2 s
    else:
        assert "attempts" not in message


def test_buffer_too_small_is_an_error_and_nothing_is_written_under_address_sanitizer(build, grpc_target):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=86")
    done = run(build / "client_check_asan", "small-buffer", grpc_target, env=env, timeout=120)
    assert "AddressSanitizer" not in done.stderr, done.stderr[-4000:]
    checked(done)
    found = statuses(done.stdout)
    assert found["shaped_too_small"] == (
        100,
        "pdeserve: output 'u' of shape (64, 64) has 4096 elements; the buffer holds 4032",
    )
    assert found["flat_too_small"][0] == 100 and "the buffer holds 4095" in found["flat_too_small"][1]
    assert (
        found["shape_mismatch"][0] == 101 and "the buffer has shape (32, 128)" in found["shape_mismatch"][1]
    )
    assert found["flat_exact"] == (0, "")
    for flag in ("shaped_untouched=T", "flat_untouched=T", "mismatch_untouched=T", "count=4096 filled=T"):
        assert flag in done.stdout


def test_fortran_rollout_streams_the_python_clients_states(build, grpc_target, client, tmp_path):
    steps, n = 3, 64
    done = checked(run(build / "client_check", "rollout", grpc_target, steps, tmp_path))
    states = records(done.stdout, "state")
    assert [int(s["step"]) for s in states] == list(range(steps))
    assert statuses(done.stdout)["rollout_end"] == (0, "") and f"states={steps}" in done.stdout
    assert statuses(done.stdout)["closed_early"] == (0, "")
    inputs = {f"w@t={t}": fortran_array(tmp_path / f"w_in{t}.f32", (n, n)) for t in range(10)}
    expected = list(client.rollout("ns-fno", inputs, steps=steps))
    for state, line in zip(expected, states, strict=True):
        np.testing.assert_array_equal(
            fortran_array(tmp_path / f"w_step{state.step}.f32", (n, n)), state.outputs["w"]
        )
        assert float(line["time"]) == pytest.approx(state.time)
        assert line["has_estimate"] == ("T" if state.checks[0].estimated_relative_l2 is not None else "F")


@pytest.mark.parametrize("max_estimate", ["1e9", "1e-9"], ids=["trusting", "falling-back"])
def test_design_loops_in_c_and_fortran_agree_with_the_python_client(
    build, grpc_target, client, tmp_path, max_estimate
):
    steps, n = 3, 64
    lines = {}
    for program in ("darcy_design", "darcy_design_c"):
        dump = tmp_path / program
        dump.mkdir()
        done = checked(
            run(
                build / program,
                *("--target", grpc_target, "--steps", steps, "--resolution", n),
                *("--max-estimate", max_estimate, "--dump-dir", dump),
            )
        )
        lines[program] = records(done.stdout, "step")
        assert [int(line["step"]) for line in lines[program]] == list(range(1, steps + 1))
        for step, line in enumerate(lines[program], start=1):
            if program == "darcy_design":  # Fortran order on disk
                a = fortran_array(dump / f"a_step{step}.f32", (n, n))
                u = fortran_array(dump / f"u_step{step}.f32", (n, n))
            else:
                a = np.fromfile(dump / f"a_step{step}.f32", "<f4").reshape(n, n)
                u = np.fromfile(dump / f"u_step{step}.f32", "<f4").reshape(n, n)
            answer = client.solve_checked(MODEL, {"a": a})
            np.testing.assert_array_equal(u, answer.outputs["u"])
            assert float(line["estimate"]) == pytest.approx(answer.checks[0].estimated_relative_l2, rel=1e-8)
            if max_estimate == "1e9":
                assert line["fallback"] == "none" and line["path"] == "SURROGATE"
                assert float(line["u_mean"]) == pytest.approx(float(u.astype(np.float64).mean()), rel=1e-8)
            else:  # every step asked again with a tolerance and used the refined answer
                assert line["fallback"] == "tolerance" and line["path"] == "REFINED"
                refined = client.solve_checked(MODEL, {"a": a}, tolerance=1e-6)
                shape = (n, n)
                name = dump / f"u_fallback_step{step}.f64"
                used = (
                    fortran_array(name, shape, "<f8")
                    if program == "darcy_design"
                    else np.fromfile(name, "<f8").reshape(shape)
                )
                np.testing.assert_allclose(used, refined.outputs["u"], rtol=1e-6, atol=1e-12)
                assert refined.checks[0].residual <= 1e-6
        # the design variable moves with the answers
        assert len({line["d"] for line in lines[program]}) == steps
    # C and Fortran run the same loop: the same designs and answers
    for f, c in zip(lines["darcy_design"], lines["darcy_design_c"], strict=True):
        for key in ("d", "u_mean", "u_max", "estimate"):
            assert float(f[key]) == pytest.approx(float(c[key]), rel=1e-8)
        assert (f["path"], f["fallback"], f["version"]) == (c["path"], c["fallback"], c["version"])


def test_installed_package_builds_c_and_fortran_programs(build, grpc_target, tmp_path):
    prefix = build / "prefix"
    checked(run("cmake", "--install", build))
    for name in ("include/pdeserve/pdeserve.h", "lib/cmake/pdeserve/pdeserveConfig.cmake"):
        assert (prefix / name).is_file(), name
    libdir = next(p.parent for p in prefix.rglob("pdeserve.pc"))
    env = dict(os.environ, PKG_CONFIG_PATH=str(libdir))
    (tmp_path / "hello.c").write_text(
        '#include <stdio.h>\n#include "pdeserve/pdeserve.h"\n'
        "int main(int argc, char **argv) {\n"
        "  pdeserve_client *client; pdeserve_model *model; pdeserve_error err;\n"
        "  if (pdeserve_client_open(argv[1], NULL, &client, &err)) return 1;\n"
        '  int rc = pdeserve_get_model(client, "darcy-fno", NULL, &model, &err);\n'
        '  printf("abi=%d rc=%d name=%s\\n", pdeserve_abi_version(), rc,\n'
        '         pdeserve_model_string(model, "name"));\n'
        "  pdeserve_model_free(model); pdeserve_client_close(client); return rc;\n}\n"
    )
    (tmp_path / "hello.f90").write_text(
        "program hello\n  use pdeserve\n  type(pdeserve_client) :: client\n  integer :: status\n"
        "  call pdeserve_open(client, 'x:1', status)\n"
        "  print '(a,i0,a,a)', 'status=', status, ' name=', pdeserve_status_name(101)\n"
        "  call pdeserve_close(client)\nend program\n"
    )
    flags = checked(run("pkg-config", "--cflags", "--libs", "pdeserve", env=env)).stdout.split()
    fflags = checked(run("pkg-config", "--cflags", "--libs", "pdeserve-fortran", env=env)).stdout.split()
    checked(run("cc", tmp_path / "hello.c", "-o", tmp_path / "hello_c", *flags))
    checked(run("gfortran", tmp_path / "hello.f90", "-o", tmp_path / "hello_f", *fflags))
    run_env = dict(os.environ, LD_LIBRARY_PATH=str(libdir.parent))
    assert (
        checked(run(tmp_path / "hello_c", grpc_target, env=run_env)).stdout == "abi=1 rc=0 name=darcy-fno\n"
    )
    assert checked(run(tmp_path / "hello_f", env=run_env)).stdout == "status=0 name=SHAPE_MISMATCH\n"
    # find_package(pdeserve) from CMake
    project = tmp_path / "consumer"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(consumer LANGUAGES C Fortran)\n"
        "find_package(pdeserve 0.1 REQUIRED)\n"
        "add_executable(hello_c ../hello.c)\ntarget_link_libraries(hello_c PRIVATE pdeserve::pdeserve)\n"
        "add_executable(hello_f ../hello.f90)\n"
        "target_link_libraries(hello_f PRIVATE pdeserve::pdeserve_fortran)\n"
    )
    checked(run("cmake", "-S", project, "-B", project / "build", f"-DCMAKE_PREFIX_PATH={prefix}"))
    checked(run("cmake", "--build", project / "build"))
    assert checked(run(project / "build" / "hello_c", grpc_target)).stdout == "abi=1 rc=0 name=darcy-fno\n"
