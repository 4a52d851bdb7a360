"""The light Python client: importable and usable with numpy, grpcio and protobuf only."""

import subprocess
import sys

import grpc
import pytest

from pdeserve.serving.client import SolverClient, SolverError, call_status

# In a fresh interpreter where the server extra's packages fail to import, as on a machine with the
# base install (numpy, grpcio, protobuf) only.
LIGHT_IMPORT = """
import sys

SERVER_ONLY = {
    "torch", "neuralop", "ray", "scipy", "qdldl", "h5py", "h5netcdf", "xarray", "safetensors",
    "grpc_health", "grpc_reflection", "prometheus_client", "tqdm", "yaml", "matplotlib",
}


class ServerExtraMissing:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in SERVER_ONLY:
            raise ImportError(f"{name} is not installed with the client")
        return None


sys.meta_path.insert(0, ServerExtraMissing())

import numpy as np

from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.tensors import from_tensor, to_tensor

array = np.arange(6, dtype=np.float32).reshape(2, 3)
assert (from_tensor(to_tensor(array), "a") == array).all()
with SolverClient("127.0.0.1:1", timeout=5, retries=0) as client:
    try:
        client.list_models()
    except SolverError as exc:
        print(exc.code.name)
"""


def test_the_client_imports_and_calls_without_torch_neuralop_or_ray():
    done = subprocess.run([sys.executable, "-c", LIGHT_IMPORT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Nothing listens there: the call fails cleanly, with its status.
    assert done.stdout.strip() == "UNAVAILABLE"


class _HttpError(grpc.RpcError):
    """What grpcio raises for a response that carried an HTTP status and no gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


INGRESS_500 = "Received http2 header with status: 500"


def test_the_ingress_http_server_error_is_unavailable_and_retried():
    assert call_status(_HttpError(grpc.StatusCode.UNKNOWN, INGRESS_500)) == grpc.StatusCode.UNAVAILABLE
    assert call_status(_HttpError(grpc.StatusCode.UNKNOWN, "boom")) == grpc.StatusCode.UNKNOWN
    assert call_status(_HttpError(grpc.StatusCode.INTERNAL, INGRESS_500)) == grpc.StatusCode.INTERNAL
    calls = []

    def lost_once(request, timeout, metadata):
        calls.append(request)
        if len(calls) == 1:
            raise _HttpError(grpc.StatusCode.UNKNOWN, INGRESS_500)
        return "answer"

    with SolverClient("127.0.0.1:1", retries=1) as client:
        assert client._call(lost_once, "request") == "answer"
        assert calls == ["request", "request"]
        calls.clear()
        client.retries = 0
        with pytest.raises(SolverError) as err:
            client._call(lost_once, "request")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
