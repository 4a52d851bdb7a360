import pickle
import subprocess
import sys

from pdeserve.protos.v1 import solver_pb2 as pb


def test_generated_modules_match_the_proto_sources():
    done = subprocess.run(
        [sys.executable, "-m", "pdeserve.protos.generate", "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_messages_pickle_under_their_installed_module_path():
    # Ray Serve pickles each request to send it to a replica.
    request = pb.SolveRequest(
        model="m", inputs={"a": pb.Tensor(shape=[2], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 8)}
    )
    assert type(request).__module__ == "pdeserve.protos.v1.solver_pb2"
    assert pickle.loads(pickle.dumps(request)) == request
    assert pb.DESCRIPTOR.package == "pdeserve.v1"
    assert pb.DESCRIPTOR.services_by_name["Solver"].full_name == "pdeserve.v1.Solver"
