"""End to end through a real Ray Serve application and a real gRPC channel."""

import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample, solve_darcy
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.operators import load_model
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.protos.v1 import solver_pb2_grpc
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.tensors import to_tensor

BUNDLED_MODEL = "darcy-fno"

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def client(grpc_target):
    with SolverClient(grpc_target, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def local(bundled_repo):
    return load_model(bundled_repo, BUNDLED_MODEL)


@pytest.fixture(scope="module")
def coefficients():
    rng = np.random.default_rng(2024)
    return np.stack([darcy_sample(DarcyParameters(), 64, rng)["a"] for _ in range(4)])


def raw_solve(target: str, request: pb.SolveRequest) -> grpc.RpcError | pb.SolveResponse:
    with grpc.insecure_channel(target) as channel:
        try:
            return solver_pb2_grpc.SolverStub(channel).Solve(request, timeout=60)
        except grpc.RpcError as exc:
            return exc


def test_solve_matches_in_process_predict(client, local, coefficients):
    batch = client.solve(BUNDLED_MODEL, {"a": coefficients})["u"]
    single = client.solve(BUNDLED_MODEL, {"a": coefficients[0]})["u"]
    expected = local.predict({"a": coefficients})["u"]
    assert batch.shape == (4, 64, 64) and single.shape == (64, 64) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(single, expected[0], atol=1e-5, rtol=0)
    # float64 input gives the same answer
    np.testing.assert_allclose(
        client.solve(BUNDLED_MODEL, {"a": coefficients.astype(np.float64)})["u"], expected, atol=1e-5, rtol=0
    )


def test_reference_solution_comes_back_with_the_error(client, coefficients, bundled_versions):
    response = client.solve_response(BUNDLED_MODEL, {"a": coefficients[:2]}, reference=True)
    reference = np.frombuffer(response.reference_outputs["u"].data, dtype="<f4").reshape(2, 64, 64)
    np.testing.assert_allclose(
        reference[1],
        solve_darcy(coefficients[1].astype(np.float64), 1.0, UnitSquareGrid(64)),
        rtol=1e-5,
        atol=1e-8,
    )
    error = response.reference_relative_l2["u"]
    assert 0 < error < 0.05
    assert response.version == bundled_versions[-1] and response.inference_ms > 0


def bad_tensor(**fields) -> pb.Tensor:
    base = {"shape": [64, 64], "dtype": pb.DTYPE_FLOAT32, "data": np.ones((64, 64), "<f4").tobytes()}
    base.update(fields)
    return pb.Tensor(**base)


BAD_REQUESTS = {
    "unknown model": (pb.SolveRequest(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    "unknown version": (
        pb.SolveRequest(model=BUNDLED_MODEL, version="99"),
        grpc.StatusCode.NOT_FOUND,
        "no version '99'",
    ),
    "empty model": (pb.SolveRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model is empty"),
    "wrong field": (
        pb.SolveRequest(model=BUNDLED_MODEL, inputs={"b": bad_tensor()}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expects input fields ['a']",
    ),
    "wrong rank": (
        pb.SolveRequest(model=BUNDLED_MODEL, inputs={"a": to_tensor(np.ones(64, "f4"))}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must have rank 2 (x, y) or 3 (batch, x, y)",
    ),
    "too small grid": (
        pb.SolveRequest(model=BUNDLED_MODEL, inputs={"a": to_tensor(np.ones((4, 4), "f4"))}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "every grid side must be between",
    ),
    "unknown dtype": (
        pb.SolveRequest(model=BUNDLED_MODEL, inputs={"a": bad_tensor(dtype=pb.DTYPE_UNSPECIFIED)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected one of DTYPE_FLOAT32, DTYPE_FLOAT64",
    ),
    "bytes disagree": (
        pb.SolveRequest(model=BUNDLED_MODEL, inputs={"a": bad_tensor(data=b"123")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 16384 bytes, got 3",
    ),
    "nan": (
        pb.SolveRequest(model=BUNDLED_MODEL, inputs={"a": to_tensor(np.full((64, 64), np.nan, "f4"))}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN or Inf",
    ),
    "empty": (
        pb.SolveRequest(model=BUNDLED_MODEL, inputs={"a": to_tensor(np.ones((0, 64, 64), "f4"))}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "is empty",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_its_status_and_the_next_good_request_succeeds(
    grpc_target, client, coefficients, case
):
    request, code, message = BAD_REQUESTS[case]
    error = raw_solve(grpc_target, request)
    assert isinstance(error, grpc.RpcError), error
    assert error.code() == code
    assert message in error.details()
    assert client.solve(BUNDLED_MODEL, {"a": coefficients[0]})["u"].shape == (64, 64)


def test_list_and_get_model_describe_the_bundled_model(client, local, bundled_versions):
    models = client.list_models()
    assert [m.name for m in models] == [
        "allen-cahn-fno",
        BUNDLED_MODEL,
        "ns-fno",
    ]  # every model under models/
    info = client.get_model(BUNDLED_MODEL)
    assert info.version == bundled_versions[-1] and list(info.versions) == bundled_versions
    assert info.architecture == "fno" and info.pde == "darcy"
    assert [f.name for f in info.inputs] == ["a"] and [f.name for f in info.outputs] == ["u"]
    assert list(info.inputs[0].shape) == [64, 64]
    assert info.min_resolution == 12 and info.max_resolution >= 256
    assert info.metrics["test_relative_l2"] == pytest.approx(local.card.metrics["test_relative_l2"])
    assert info.parameter_count == local.parameter_count()
    with pytest.raises(SolverError) as excinfo:
        client.get_model("nope")
    assert excinfo.value.code == grpc.StatusCode.NOT_FOUND


def test_health_check_reports_serving(grpc_target, client):
    assert client.health() == "SERVING"
    assert client.health("pdeserve.v1.Solver") == "SERVING"
    with grpc.insecure_channel(grpc_target) as channel, pytest.raises(grpc.RpcError) as excinfo:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="other"), timeout=30)
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


def test_without_a_token_the_port_answers_on_loopback_only(grpc_target):
    # Unauthenticated, the server must not be reachable from the network unless --host says so.
    import ray

    address = ray.util.get_node_ip_address()
    if address.startswith("127."):
        pytest.skip("this machine has no network address besides loopback")
    port = grpc_target.rpartition(":")[2]
    with grpc.insecure_channel(f"{address}:{port}") as channel, pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_solve_cli_writes_the_solution_and_reports_errors_in_one_line(
    grpc_target, local, coefficients, tmp_path
):
    np.save(tmp_path / "a.npy", coefficients[0])
    cli = [sys.executable, "-m", "pdeserve.cli", "solve", "--target", grpc_target]
    done = subprocess.run(
        [
            *cli,
            "--model",
            BUNDLED_MODEL,
            "--input",
            str(tmp_path / "a.npy"),
            "--out",
            str(tmp_path / "u.npy"),
            "--reference",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "against the classical solver" in done.stdout
    np.testing.assert_allclose(
        np.load(tmp_path / "u.npy"), local.predict({"a": coefficients[0]})["u"], atol=1e-5
    )
    failed = subprocess.run(
        [*cli, "--model", "nope", "--input", str(tmp_path / "a.npy")], capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [failed.stderr.strip()] and "NOT_FOUND" in failed.stderr
