"""Hostile inputs through a real Ray Serve application and a real gRPC channel: tensors of absurd rank
or size, inputs the classical solvers cannot take, client-chosen names as metric labels, and names that
are not names. Each answer is a precise status (never INTERNAL), and the server keeps serving."""

import time
import urllib.request
import uuid

import grpc
import numpy as np
import pytest
from hostile_models import DARCY, build_repository
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as oip_pb  # the same messages as ours (see serving/oip.py)
from tritonclient.grpc import service_pb2_grpc as oip_grpc

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.protos.v1 import solver_pb2_grpc
from pdeserve.serving.tensors import to_tensor

APP = "hostile"
METADATA = (("application", APP),)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def target(serve_apps, bundled_repo, bundled_versions, tmp_path_factory):
    repo = build_repository(tmp_path_factory.mktemp("hostile"), bundled_repo, bundled_versions[-1])
    yield serve_apps.deploy(APP, repo)
    serve_apps.delete(APP)


@pytest.fixture(scope="module")
def channel(target):
    with grpc.insecure_channel(target) as channel:
        yield channel


def call(method, request) -> tuple[grpc.StatusCode, str]:
    """``(code, details)`` of a unary call, or of a stream once read to its end."""
    try:
        answer = method(request, timeout=60, metadata=METADATA)
        if not hasattr(answer, "ByteSize"):  # a stream: its status comes after its messages
            list(answer)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


def solve(channel, **fields) -> tuple[grpc.StatusCode, str]:
    return call(solver_pb2_grpc.SolverStub(channel).Solve, pb.SolveRequest(**fields))


def rollout(channel, **fields) -> tuple[grpc.StatusCode, str]:
    return call(solver_pb2_grpc.SolverStub(channel).Rollout, pb.RolloutRequest(steps=2, **fields))


def infer(channel, **fields) -> tuple[grpc.StatusCode, str]:
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    return call(stub.ModelInfer, oip_pb.ModelInferRequest(**fields))


def darcy_field(side: int = 64) -> np.ndarray:
    return darcy_sample(DarcyParameters(), side, np.random.default_rng(1))["a"].astype(np.float32)


RANK_70 = [1] * 70


@pytest.mark.parametrize(
    "shape",
    [RANK_70, [0, *[1] * 69], [0, 2**62], [0, 2**31, 2**31, 2**31]],
    ids=["70", "70-empty", "0x2^62", "0x2^93"],
)
def test_tensors_of_absurd_rank_or_size_are_invalid_arguments_for_every_tensor_rpc(channel, shape):
    data = b"\0\0\0\0" if 0 not in shape else b""
    tensor = pb.Tensor(shape=shape, dtype=pb.DTYPE_FLOAT32, data=data)
    oip_tensor = oip_pb.ModelInferRequest.InferInputTensor(name="a", datatype="FP32", shape=shape)
    typed = oip_pb.ModelInferRequest.InferInputTensor(
        name="a",
        datatype="FP32",
        shape=shape,
        contents=oip_pb.InferTensorContents(fp32_contents=[1.0] * (0 not in shape)),
    )
    answers = {
        "Solve": solve(channel, model=DARCY, inputs={"a": tensor}),
        "Rollout": rollout(channel, model="ns-small", inputs={"w0": tensor}),
        "ModelInfer raw": infer(channel, model_name=DARCY, inputs=[oip_tensor], raw_input_contents=[data]),
        "ModelInfer typed": infer(channel, model_name=DARCY, inputs=[typed]),
    }
    for rpc, (code, details) in answers.items():
        assert code == INVALID, (rpc, code, details)
        assert "dimensions" in details or "elements" in details, (rpc, details)


def test_float64_beyond_float32_is_refused(channel):
    a = np.full((64, 64), 1e300)
    assert solve(channel, model=DARCY, inputs={"a": to_tensor(a)}) == (
        INVALID,
        "input 'a' holds values up to 1e+300, beyond float32's 3.4e+38, which the model computes in",
    )


def test_a_non_positive_darcy_coefficient_with_reference_is_an_invalid_argument(channel):
    for value in (-1.0, 0.0):
        a = darcy_field()
        a[10, 10] = value
        code, details = solve(channel, model=DARCY, inputs={"a": to_tensor(a)}, reference=True)
        assert code == INVALID and "strictly positive" in details, details
    # and the replica still solves with the reference
    assert (
        solve(channel, model=DARCY, inputs={"a": to_tensor(darcy_field())}, reference=True)[0]
        == grpc.StatusCode.OK
    )


def test_a_non_positive_helmholtz_wave_speed_is_an_invalid_argument_with_or_without_reference(channel):
    c = np.full((33, 33), 20.0, np.float32)
    c[3, 3] = -1.0
    for fields in ({}, {"reference": True}, {"tolerance": 1e-3}):
        code, details = solve(channel, model="helmholtz-small", inputs={"c": to_tensor(c)}, **fields)
        assert code == INVALID and "wave speed must be finite and strictly positive" in details, (
            fields,
            details,
        )
    c[3, 3] = 20.0
    assert (
        solve(channel, model="helmholtz-small", inputs={"c": to_tensor(c)}, reference=True)[0]
        == grpc.StatusCode.OK
    )


@pytest.mark.parametrize(
    ("model", "field", "side"), [("ns-small", "w0", (32, 32)), ("burgers-small", "u0", (64,))]
)
def test_an_amplitude_the_time_stepping_solver_does_not_resolve_is_an_invalid_argument(
    channel, model, field, side
):
    big = (1e4 * np.random.default_rng(0).standard_normal(side)).astype(np.float32)
    for fields in ({"reference": True}, {"tolerance": 1e-3}):
        code, details = solve(channel, model=model, inputs={field: to_tensor(big)}, **fields)
        assert code == INVALID and "not finite" in details, (fields, code, details)
    small = (big / 1e4).astype(np.float32)
    assert (
        solve(channel, model=model, inputs={field: to_tensor(small)}, reference=True)[0] == grpc.StatusCode.OK
    )


@pytest.mark.parametrize("name", [f"{DARCY}\n", "x\n", f"{DARCY}/../{DARCY}", "a" * 129, "é"])
def test_a_model_name_must_match_in_full(channel, name):
    a = to_tensor(darcy_field())
    for code, details in (
        solve(channel, model=name, inputs={"a": a}),
        infer(channel, model_name=name, inputs=[oip_pb.ModelInferRequest.InferInputTensor(name="a")]),
        rollout(channel, model=name, inputs={"w0": a}),
    ):
        assert code == INVALID and "model name" in details and "is invalid" in details, (code, details)
    code, details = solve(channel, model=DARCY, version="1\n", inputs={"a": a})
    assert code == INVALID and "version '1\\n' is invalid" in details


def test_long_strings_are_not_echoed_back(channel):
    long = "m" * 1_000_000
    code, details = solve(channel, model=long, inputs={"a": to_tensor(darcy_field())})
    assert code == INVALID and len(details) < 300 and "(1000002 characters)" in details, details[:300]
    # names the layers below echo (unknown input fields) are cut with the whole message
    code, details = solve(channel, model=DARCY, inputs={long: to_tensor(darcy_field())})
    assert code == INVALID and 0 < len(details) <= 1100, details[:300]
    tensor = oip_pb.ModelInferRequest.InferInputTensor(name=long, datatype="FP32", shape=[2])
    code, details = infer(channel, model_name=DARCY, inputs=[tensor], raw_input_contents=[b"\0" * 3])
    assert code == INVALID and 0 < len(details) <= 1100, details[:300]


def scrape(port: int) -> list[tuple[dict[str, str], float]]:
    """Label sets and values of every ``ray_pdeserve_requests_total`` series on the metrics port."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ray_pdeserve_requests_total"
    ]


def not_found(series: list[tuple[dict[str, str], float]], model: str, version: str) -> float:
    """Solve requests answered NOT_FOUND under the labels ``model`` and ``version``."""
    return sum(
        value
        for labels, value in series
        if (labels["model"], labels["version"], labels["method"], labels["code"])
        == (model, version, "Solve", "NOT_FOUND")
    )


def test_names_a_client_chooses_never_become_metric_labels(channel, metrics_port):
    tag = uuid.uuid4().hex[:8]
    names = [f"rnd{tag}-{i}" for i in range(50)]
    versions = [f"9{tag.encode().hex()[:8]}{i}" for i in range(50)]  # digits only: well-formed versions
    a = to_tensor(darcy_field())

    def counts(series) -> tuple[float, float]:
        return not_found(series, "unknown", "-"), not_found(series, DARCY, "unknown")

    before = counts(scrape(metrics_port))
    for name, version in zip(names, versions, strict=True):
        assert solve(channel, model=name, inputs={"a": a})[0] == grpc.StatusCode.NOT_FOUND
        assert solve(channel, model=DARCY, version=version, inputs={"a": a})[0] == grpc.StatusCode.NOT_FOUND
    deadline = time.monotonic() + 90  # Ray's metrics agent exports on an interval
    while True:
        series = scrape(metrics_port)
        added = tuple(after - b for after, b in zip(counts(series), before, strict=True))
        if min(added) >= 50 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert min(added) >= 50, added  # late exports of earlier tests may add more
    assert [labels for labels, _ in series if labels["model"].startswith(f"rnd{tag}")] == []
    assert [labels for labels, _ in series if labels["version"] in set(versions)] == []
