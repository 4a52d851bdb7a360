"""The light Python client: importable and usable with numpy, grpcio and protobuf only."""

import subprocess
import sys

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
