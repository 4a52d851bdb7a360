"""The Open Inference Protocol v2 on the session's live server, driven by Triton's own client library
(tritonclient), not by pdeserve's stubs; and gRPC reflection listing every service."""

from importlib.metadata import version as package_version

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.serving.client import SolverClient
from pdeserve.serving.server import APP_NAME

MODEL = "darcy-fno"
# Other tests deploy more Serve applications on the session's Ray instance: route to pdeserve's.
HEADERS = {"application": APP_NAME}
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def client(grpc_target):
    with triton.InferenceServerClient(grpc_target) as c:
        yield c


@pytest.fixture(scope="module")
def local(bundled_repo):
    return load_model(bundled_repo, MODEL)


@pytest.fixture(scope="module")
def fields():
    rng = np.random.default_rng(11)
    return np.stack([darcy_sample(DarcyParameters(), 64, rng)["a"] for _ in range(3)]).astype(np.float32)


def infer(client, array: np.ndarray, datatype: str = "FP32", name: str = "a", **kwargs) -> np.ndarray:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return client.infer(kwargs.pop("model", MODEL), [tensor], headers=HEADERS, **kwargs)


def status_of(call) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status()


def test_server_is_live_ready_and_describes_itself(client):
    assert client.is_server_live(headers=HEADERS) is True
    assert client.is_server_ready(headers=HEADERS) is True
    metadata = client.get_server_metadata(headers=HEADERS)
    assert (metadata.name, metadata.version, list(metadata.extensions)) == (
        "pdeserve",
        package_version("pdeserve"),
        [],
    )


def test_model_ready_is_true_for_published_models_and_false_for_unknown_ones(client):
    assert client.is_model_ready(MODEL, headers=HEADERS) is True
    assert client.is_model_ready(MODEL, "1", headers=HEADERS) is True
    # Triton's convention: an unknown model or version is "not ready", with status OK.
    assert client.is_model_ready("no-such-model", headers=HEADERS) is False
    assert client.is_model_ready(MODEL, "99", headers=HEADERS) is False


def test_model_metadata_lists_versions_platform_and_tensor_signatures(client, bundled_versions):
    metadata = client.get_model_metadata(MODEL, headers=HEADERS)
    described = (metadata.name, list(metadata.versions), metadata.platform)
    assert described == (MODEL, bundled_versions, "pdeserve/fno")
    signature = [(t.name, t.datatype, list(t.shape)) for t in (*metadata.inputs, *metadata.outputs)]
    assert signature == [
        ("a", "FP32", [-1, -1, -1]),
        ("u", "FP32", [-1, -1, -1]),
        ("estimated_relative_l2", "FP64", [-1]),
        ("indicator", "FP64", [-1]),
        ("residual", "FP64", [-1]),
        ("answer_path", "BYTES", [-1]),
    ]
    assert status_of(lambda: client.get_model_metadata("no-such-model", headers=HEADERS)) == (
        "StatusCode.NOT_FOUND"
    )


def test_raw_infer_matches_in_process_predict_and_solve(client, local, fields, grpc_target, bundled_versions):
    expected = local.predict({"a": fields})["u"]
    result = infer(client, fields, request_id="req-7")
    batch = result.as_numpy("u")
    assert batch.shape == (3, 64, 64) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, expected, atol=1e-5, rtol=0)
    response = result.get_response()
    newest = bundled_versions[-1]
    assert (response.model_name, response.model_version, response.id) == (MODEL, newest, "req-7")
    single = infer(client, fields[0], model_version="1").as_numpy("u")
    assert single.shape == (64, 64)
    np.testing.assert_allclose(single, expected[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        infer(client, fields.astype(np.float64), "FP64").as_numpy("u"), expected, atol=1e-5
    )
    with SolverClient(grpc_target, application=APP_NAME) as solver:
        np.testing.assert_allclose(batch, solver.solve(MODEL, {"a": fields})["u"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("datatype", "field"), [("FP32", "fp32_contents"), ("FP64", "fp64_contents")])
def test_typed_contents_infer_matches_predict(grpc_target, local, fields, datatype, field):
    # tritonclient's high-level API always sends raw bytes; typed contents go through its own stubs.
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="a", datatype=datatype, shape=[2, 64, 64])
    getattr(tensor.contents, field).extend(fields[:2].ravel().tolist())
    request.outputs.add(name="u")
    with grpc.insecure_channel(grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=list(HEADERS.items()), timeout=60)
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("u", "FP32", [2, 64, 64])
    answer = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 64, 64)
    np.testing.assert_allclose(answer, local.predict({"a": fields[:2]})["u"], atol=1e-5, rtol=0)


def test_bad_requests_get_precise_statuses_and_the_server_keeps_serving(client, local, fields):
    a = fields[0]
    cases = {
        "rank 1": (lambda: infer(client, a[0]), "INVALID_ARGUMENT"),
        "INT32": (lambda: infer(client, a.astype(np.int32), "INT32"), "INVALID_ARGUMENT"),
        "unknown input": (lambda: infer(client, a, name="b"), "INVALID_ARGUMENT"),
        "unsupported grid": (lambda: infer(client, a[:7, :7]), "INVALID_ARGUMENT"),
        "NaN": (lambda: infer(client, np.full_like(a, np.nan)), "INVALID_ARGUMENT"),
        "unknown output": (
            lambda: infer(client, a, outputs=[triton.InferRequestedOutput("v")]),
            "INVALID_ARGUMENT",
        ),
        "unknown model": (lambda: infer(client, a, model="no-such-model"), "NOT_FOUND"),
        "unknown version": (lambda: infer(client, a, model_version="99"), "NOT_FOUND"),
    }
    statuses = {case: status_of(call) for case, (call, _) in cases.items()}
    assert statuses == {case: f"StatusCode.{code}" for case, (_, code) in cases.items()}
    np.testing.assert_allclose(infer(client, a).as_numpy("u"), local.predict({"a": a})["u"], atol=1e-5)


def test_error_messages_name_what_was_expected(client, fields):
    with pytest.raises(InferenceServerException) as caught:
        infer(client, fields[0].astype(np.int32), "INT32")
    assert caught.value.message() == "input 'a' has datatype INT32; expected one of FP32, FP64"


def test_reflection_lists_every_service(grpc_target):
    with grpc.insecure_channel(grpc_target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"pdeserve.v1.Solver", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        # A private pool: tritonclient already holds inference.* in the default one.
        service = DescriptorPool(database).FindServiceByName("inference.GRPCInferenceService")
        assert {m.name for m in service.methods} == {
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
        }
