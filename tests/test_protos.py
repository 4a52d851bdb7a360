import importlib.resources
import pickle
import re
import subprocess
import sys
from pathlib import Path

from pdeserve.protos.v1 import solver_pb2 as pb


def test_generated_modules_match_the_proto_sources():
    done = subprocess.run(
        [sys.executable, "-m", "pdeserve.protos.generate", "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_proto_sources_ship_in_one_tree_that_mirrors_their_packages():
    # Clients in other languages (examples/cpp) compile the sources the installed package carries.
    package = importlib.resources.files("pdeserve.protos")
    root = Path(str(package / "src"))
    sources = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))
    assert sources == ["inference/grpc_service.proto", "pdeserve/v1/solver.proto"]
    for source in sources:
        [declared] = re.findall(r"^package ([\w.]+);", (root / source).read_text(), flags=re.M)
        assert Path(source).parent.as_posix() == declared.replace(".", "/")
    # Outside that tree the package holds only Python: generated modules, their stubs, the generator.
    stray = [p for p in Path(str(package)).rglob("*.proto") if root not in p.parents]
    assert stray == []


def test_messages_pickle_under_their_installed_module_path():
    # Ray Serve pickles each request to send it to a replica.
    request = pb.SolveRequest(
        model="m", inputs={"a": pb.Tensor(shape=[2], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 8)}
    )
    assert type(request).__module__ == "pdeserve.protos.v1.solver_pb2"
    assert pickle.loads(pickle.dumps(request)) == request
    assert pb.DESCRIPTOR.package == "pdeserve.v1"
    assert pb.DESCRIPTOR.services_by_name["Solver"].full_name == "pdeserve.v1.Solver"
    rollout = pb.DESCRIPTOR.services_by_name["Solver"].methods_by_name["Rollout"]
    assert rollout.server_streaming and not rollout.client_streaming


# Run in a fresh interpreter: tritonclient (imported by the OIP tests) defines the same inference.*
# messages in protobuf's default descriptor pool, so the two cannot share a process.
OIP_CHECK = """
import pickle
from pdeserve.protos.inference import grpc_service_pb2 as oip
request = oip.ModelInferRequest(model_name="m", raw_input_contents=[b"\\0" * 4])
request.inputs.add(name="a", datatype="FP32", shape=[1])
assert type(request).__module__ == "pdeserve.protos.inference.grpc_service_pb2"
assert pickle.loads(pickle.dumps(request)) == request
service = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
print(service.full_name, sorted(m.name for m in service.methods))
"""


def test_oip_messages_pickle_under_their_installed_module_path():
    done = subprocess.run([sys.executable, "-c", OIP_CHECK], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 1) == [
        "inference.GRPCInferenceService",
        "['ModelInfer', 'ModelMetadata', 'ModelReady', 'ServerLive', 'ServerMetadata', 'ServerReady']\n",
    ]
