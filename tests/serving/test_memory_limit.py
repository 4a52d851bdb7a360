"""A replica whose memory is capped, through the real Ray Serve gRPC proxy: a request whose forward pass
cannot fit is refused at once with RESOURCE_EXHAUSTED (torch's allocation failure, not a bug), the
replica process survives, and the next small request is answered. The cap is a real one, ``RLIMIT_AS``
on the replica's process, on a replica of its own application (deleted after the test), so no other
test's replica is touched."""

import contextlib
import resource
from pathlib import Path

import grpc
import numpy as np
import pytest

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.serving.client import SolverClient, SolverError

APP, MODEL = "memlimit", "darcy-fno"
HEADROOM = 128 << 20  # address space left to the replica: a 64x64 solve fits, a 1024x1024 forward pass not
pytestmark = pytest.mark.ray


def _replica_pid() -> int:
    """The process of the application's one replica, by the title Ray gives a replica's process."""
    title = f"ServeReplica:{APP}:SolverService".encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if cmdline.read_bytes().startswith(b"ray::" + title):
                pids.append(int(cmdline.parent.name))
    assert len(pids) == 1, pids
    return pids[0]


def _address_space(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def test_a_forward_pass_beyond_the_memory_limit_is_resource_exhausted(deploy_app, bundled_repo):
    target = deploy_app(APP, bundled_repo)
    rng = np.random.default_rng(3)
    small = darcy_sample(DarcyParameters(), 64, rng)["a"].astype(np.float32)
    large = np.resize(small, (1024, 1024))  # 2**20 points: one forward pass of about a GiB
    with SolverClient(target, application=APP, retries=0, timeout=120) as client:
        assert client.solve(MODEL, {"a": small})["u"].shape == (64, 64)  # the replica has loaded the model
        pid = _replica_pid()
        limit = _address_space(pid) + HEADROOM
        # The soft limit only: an unprivileged process may raise it back afterwards, not a hard one.
        previous = resource.prlimit(pid, resource.RLIMIT_AS)
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, previous[1]))
        try:
            with pytest.raises(SolverError) as refused:
                client.solve(MODEL, {"a": large})
            code = refused.value.code
            with SolverClient(target, application=APP, retries=5, timeout=120) as retrying:
                answered = retrying.solve(MODEL, {"a": small})["u"].shape
            survived = _replica_pid() == pid
        finally:
            with contextlib.suppress(ProcessLookupError):  # the replica died and was replaced
                resource.prlimit(pid, resource.RLIMIT_AS, previous)
    print(f"\nover the memory limit: {code.name} ({refused.value}); replica survived: {survived}")
    assert answered == (64, 64)  # service resumes
    assert survived  # the allocation failed inside the replica; the process itself is not lost
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # refused at once, not a hang, not INTERNAL
