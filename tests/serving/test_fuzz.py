"""Generated hostile requests (hypothesis) through one real Ray Serve application and a real gRPC channel:
Solve, Rollout and ModelInfer with tensors of any rank up to 70, huge, overflowing, negative and zero
dimensions, every dtype and invalid ones, byte counts that do not match, float64 extremes, NaN and Inf,
long strings and random metadata (authorization included). Every answer is a status from a fixed set,
never INTERNAL or UNKNOWN, and the next good request is served."""

import collections
import math

import grpc
import numpy as np
import pytest
from hostile_models import DARCY, build_repository
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as oip_pb  # the same messages as ours (see serving/oip.py)
from tritonclient.grpc import service_pb2_grpc as oip_grpc

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.protos.v1 import solver_pb2_grpc
from pdeserve.serving.options import ServingOptions
from pdeserve.serving.tensors import to_tensor

APP = "fuzz"
TOKEN = "fuzz-token"
MODELS = [DARCY, "ns-small", "burgers-small", "helmholtz-small"]
# Statuses a hostile request may get; INTERNAL and UNKNOWN (a bug) never.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Examples per test: 2000 in all.
EXAMPLES = {"Solve": 850, "ModelInfer": 700, "Rollout": 450}
SEEN: collections.Counter = collections.Counter()  # (rpc, status) -> count, for the summary
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def channel(serve_apps, bundled_repo, bundled_versions, tmp_path_factory):
    """A channel to one application, deployed once for the module, that requires a token."""
    repo = build_repository(tmp_path_factory.mktemp("fuzz"), bundled_repo, bundled_versions[-1])
    target = serve_apps.deploy(APP, repo, ServingOptions(auth_token=TOKEN, max_request_bytes=1_000_000))
    with grpc.insecure_channel(target) as channel:
        yield channel
    serve_apps.delete(APP)


# Dimensions: small ones that may make a valid grid, and huge ones whose products overflow int64.
DIM = st.one_of(
    st.integers(0, 70), st.sampled_from([-1, -(2**63), 2**31, 2**40, 2**62, 2**63 - 1, 64, 33, 32])
)
SHAPE = st.one_of(
    st.lists(DIM, max_size=4),
    st.lists(st.integers(0, 2), min_size=5, max_size=70),  # absurd ranks, mostly empty or single
    st.sampled_from([[64, 64], [2, 64, 64], [33, 33], [32, 32], [64], [1] * 70, [0] * 70, [0, 2**62]]),
)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, 5e-324, 3.5e38, -1.0, 0.0, 1.0, 4.0, 1e4]),
)
NAME = st.one_of(
    st.sampled_from(["a", "u0", "w0", "c", "", "a\n"]),
    st.text(max_size=20),
    st.integers(1000, 100_000).map(lambda n: "b" * n),  # long strings, drawn cheaply
)
MODEL = st.one_of(
    st.sampled_from(MODELS),
    st.sampled_from(["", "nope", f"{DARCY}\n", "../etc", "a" * 129]),
    st.text(max_size=40),
    st.integers(129, 100_000).map(lambda n: "m" * n),
)
VERSION = st.one_of(st.sampled_from(["", "1", "2", "99", "01", "x", "1\n", "9" * 30]), st.text(max_size=10))
# Printable ASCII, as gRPC requires of metadata values.
METADATA_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
# The right token most of the time (the requests behind it are the interesting ones), else none, a
# wrong one or noise.
AUTHORIZATION = st.one_of(
    *[st.just(f"Bearer {TOKEN}")] * 5,  # one_of draws its branches alike
    st.just(TOKEN),
    st.sampled_from([None, f"Bearer {TOKEN}x", ""]),
    METADATA_VALUE,
)
METADATA = st.tuples(
    AUTHORIZATION,
    st.lists(
        st.tuples(st.sampled_from(["x-fuzz", "request_id", "multiplexed_model_id", "x-b"]), METADATA_VALUE),
        max_size=3,
    ),
).map(
    lambda m: (("application", APP),) + ((("authorization", m[0]),) if m[0] is not None else ()) + tuple(m[1])
)


@st.composite
def values(draw, count: int, itemsize: int) -> bytes:
    """``count`` values as little-endian bytes: one drawn value everywhere, a plausible field with one
    drawn value in it, or noise of a drawn amplitude."""
    dtype = "<f4" if itemsize == 4 else "<f8"
    fill = draw(VALUES)
    kind = draw(st.sampled_from(["fill", "one", "noise"])) if count else "fill"
    with np.errstate(over="ignore", invalid="ignore"):  # float64 extremes become float32 inf
        if kind == "fill":
            array = np.full(count, fill, dtype=np.float64)
        elif kind == "one":
            array = np.full(count, 5.0)
            array[draw(st.integers(0, count - 1))] = fill
        else:
            amplitude = draw(st.sampled_from([1.0, 1e2, 1e4, 1e30]))
            array = amplitude * np.random.default_rng(draw(st.integers(0, 9))).standard_normal(count)
        return array.astype(dtype).tobytes()


@st.composite
def payloads(draw, shape: list[int], itemsize: int) -> bytes:
    """Bytes for a tensor of ``shape``: the right count (of drawn values when small), or a wrong one."""
    count = math.prod(shape) if all(d >= 0 for d in shape) else -1
    if 0 <= count <= 64 * 64 * 2 and draw(st.booleans()):
        return draw(values(count, itemsize))
    return draw(st.binary(max_size=64))


# Each model's input field and grids it accepts: requests that pass the wire checks and reach the
# model, its estimate, refinement and the classical reference.
PLAUSIBLE = {
    DARCY: ("a", [[64, 64], [2, 64, 64], [33, 33], [16, 16]]),
    "helmholtz-small": ("c", [[33, 33], [2, 17, 17]]),
    "burgers-small": ("u0", [[64], [2, 32]]),
    "ns-small": ("w0", [[32, 32], [2, 16, 16]]),
}


@st.composite
def plausible(draw) -> tuple[str, dict[str, pb.Tensor]]:
    """A model and a well-formed input for it, of hostile values."""
    model = draw(st.sampled_from(sorted(PLAUSIBLE)))
    field, shapes = PLAUSIBLE[model]
    shape = draw(st.sampled_from(shapes))
    dtype = draw(st.sampled_from([pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64]))
    data = draw(values(math.prod(shape), 8 if dtype == pb.DTYPE_FLOAT64 else 4))
    return model, {field: pb.Tensor(shape=shape, dtype=dtype, data=data)}


def requests(draw) -> tuple[str, dict[str, pb.Tensor]]:
    """A model and inputs: anything, or half the time a well-formed input for the model."""
    if draw(st.booleans()):
        return draw(plausible())
    return draw(MODEL), draw(st.dictionaries(NAME, tensors(), max_size=2))


@st.composite
def tensors(draw) -> pb.Tensor:
    shape = draw(SHAPE)
    dtype = draw(st.one_of(st.sampled_from(list(pb.DType.values())), st.integers(-5, 2**31 - 1)))
    return pb.Tensor(
        shape=shape, dtype=dtype, data=draw(payloads(shape, 8 if dtype == pb.DTYPE_FLOAT64 else 4))
    )


@st.composite
def infer_inputs(draw) -> tuple[list[oip_pb.ModelInferRequest.InferInputTensor], list[bytes]]:
    """OIP input tensors and their raw contents (empty: typed contents, or none)."""
    n = draw(st.integers(0, 3))
    raw = draw(st.booleans())
    inputs, contents = [], []
    for _ in range(n):
        shape = draw(SHAPE)
        datatype = draw(
            st.one_of(st.sampled_from(["FP32", "FP64", "INT32", "BYTES", "", "fp32"]), st.text(max_size=8))
        )
        tensor = oip_pb.ModelInferRequest.InferInputTensor(name=draw(NAME), datatype=datatype, shape=shape)
        itemsize = 8 if datatype == "FP64" else 4
        data = draw(payloads(shape, itemsize))
        if raw:
            contents.append(data)
        elif datatype in ("FP32", "FP64") and len(data) % itemsize == 0:
            values = np.frombuffer(data, "<f4" if itemsize == 4 else "<f8").tolist()
            field = "fp32_contents" if itemsize == 4 else "fp64_contents"
            tensor.contents.CopyFrom(oip_pb.InferTensorContents(**{field: values}))
        inputs.append(tensor)
    if raw and draw(st.booleans()):
        contents = contents[: draw(st.integers(0, len(contents)))]  # a count that may not match
    return inputs, contents


def parameters(draw) -> dict[str, oip_pb.InferParameter]:
    choice = draw(
        st.sampled_from(["none", "double", "int", "string", "bool"]),
    )
    value = {
        "double": lambda: oip_pb.InferParameter(double_param=draw(VALUES)),
        "int": lambda: oip_pb.InferParameter(int64_param=draw(st.integers(-(2**63), 2**63 - 1))),
        "string": lambda: oip_pb.InferParameter(string_param=draw(st.text(max_size=20))),
        "bool": lambda: oip_pb.InferParameter(bool_param=draw(st.booleans())),
    }
    return {} if choice == "none" else {"tolerance": value[choice]()}


def status(method, request, metadata) -> tuple[grpc.StatusCode, str]:
    """``(code, details)`` of a call (a stream read to its end)."""
    try:
        answer = method(request, timeout=60, metadata=metadata)
        if not hasattr(answer, "ByteSize"):
            list(answer)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


def check(rpc: str, code: grpc.StatusCode, details: str) -> None:
    SEEN[rpc, code.name] += 1
    assert code in ALLOWED, (rpc, code, details)
    assert len(details) <= 1100 and "/tmp" not in details and "Traceback" not in details, details[:300]


FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


@settings(max_examples=EXAMPLES["Solve"], **FUZZ)
@given(
    data=st.data(),
    version=VERSION,
    reference=st.booleans(),
    tolerance=st.one_of(st.just(0.0), VALUES),
    metadata=METADATA,
)
def test_solve_answers_hostile_requests_with_a_precise_status(
    channel, data, version, reference, tolerance, metadata
):
    model, inputs = requests(data.draw)
    request = pb.SolveRequest(
        model=model, version=version, inputs=inputs, reference=reference, tolerance=tolerance
    )
    check("Solve", *status(solver_pb2_grpc.SolverStub(channel).Solve, request, metadata))


@settings(max_examples=EXAMPLES["ModelInfer"], **FUZZ)
@given(model=MODEL, version=VERSION, data=st.data(), metadata=METADATA)
def test_model_infer_answers_hostile_requests_with_a_precise_status(channel, model, version, data, metadata):
    inputs, raw = data.draw(infer_inputs())
    outputs = [
        oip_pb.ModelInferRequest.InferRequestedOutputTensor(name=n)
        for n in data.draw(
            st.lists(st.one_of(st.sampled_from(["u", "indicator", "answer_path"]), NAME), max_size=2)
        )
    ]
    request = oip_pb.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=inputs,
        raw_input_contents=raw,
        outputs=outputs,
        parameters=parameters(data.draw),
    )
    check("ModelInfer", *status(oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request, metadata))


@settings(max_examples=EXAMPLES["Rollout"], **FUZZ)
@given(
    data=st.data(),
    version=VERSION,
    steps=st.one_of(st.integers(-3, 3), st.sampled_from([2**31 - 1, -(2**31), 10_001])),
    metadata=METADATA,
)
def test_rollout_answers_hostile_requests_with_a_precise_status(channel, data, version, steps, metadata):
    model, inputs = requests(data.draw)
    request = pb.RolloutRequest(model=model, version=version, inputs=inputs, steps=steps)
    check("Rollout", *status(solver_pb2_grpc.SolverStub(channel).Rollout, request, metadata))


def test_after_the_fuzz_good_requests_are_served(channel, bundled_repo):
    """Runs after the fuzz (pytest keeps the file's order); prints the statuses the fuzz saw."""
    print("\nfuzz statuses:", dict(sorted(SEEN.items())), "examples:", sum(SEEN.values()))
    metadata = (("application", APP), ("authorization", f"Bearer {TOKEN}"))
    a = darcy_sample(DarcyParameters(), 64, np.random.default_rng(2))["a"]
    answer = solver_pb2_grpc.SolverStub(channel).Solve(
        pb.SolveRequest(model=DARCY, inputs={"a": to_tensor(a)}), timeout=60, metadata=metadata
    )
    assert answer.model == DARCY and list(answer.outputs["u"].shape) == [64, 64]
    w0 = np.random.default_rng(3).standard_normal((32, 32))
    steps = list(
        solver_pb2_grpc.SolverStub(channel).Rollout(
            pb.RolloutRequest(model="ns-small", inputs={"w0": to_tensor(w0)}, steps=3),
            timeout=60,
            metadata=metadata,
        )
    )
    assert [s.step for s in steps] == [0, 1, 2]
    tensor = oip_pb.ModelInferRequest.InferInputTensor(name="a", datatype="FP64", shape=[64, 64])
    inferred = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        oip_pb.ModelInferRequest(
            model_name=DARCY, inputs=[tensor], raw_input_contents=[a.astype("<f8").tobytes()]
        ),
        timeout=60,
        metadata=metadata,
    )
    assert inferred.outputs[0].name == "u" and list(inferred.outputs[0].shape) == [64, 64]
