"""Readiness follows what a replica can serve now, through a real Ray Serve gRPC channel: a replica that
started with a broken model only is not ready, and becomes ready once a good version is published; the
torch thread's watchdog notices a job that never returns."""

import asyncio
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from pdeserve.operators.repository import ModelRepository
from pdeserve.serving.app import WEDGED_AFTER_S, TorchThread, health_problem
from pdeserve.serving.client import SolverClient, SolverError

APP = "readiness"
MODEL = "darcy-fno"


def _server_ready(target: str) -> bool:
    """The Open Inference Protocol's ServerReady, through Triton's client."""
    with triton.InferenceServerClient(target) as client:
        return client.is_server_ready(headers={"application": APP})


@pytest.mark.ray
def test_a_replica_with_a_broken_model_only_becomes_ready_when_a_good_version_is_published(
    deploy_app, bundled_repo, bundled_versions, tmp_path
):
    good = bundled_repo / MODEL / bundled_versions[-1]
    repo = tmp_path / "repo"
    shutil.copytree(good, repo / MODEL / "1")
    (repo / MODEL / "1" / "model.safetensors").unlink()
    target = deploy_app(APP, repo)
    field = np.ones((64, 64), np.float32)
    with SolverClient(target, application=APP, retries=0) as c:
        assert c.health() == "NOT_SERVING" and not _server_ready(target)
        with pytest.raises(SolverError) as err:
            c.solve(MODEL, {"a": field})
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and MODEL in str(err.value)

        published = ModelRepository(repo).publish(
            MODEL, lambda folder: shutil.copytree(good, folder, dirs_exist_ok=True)
        )
        deadline = time.monotonic() + 60
        while c.health() != "SERVING" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert c.health() == "SERVING" and _server_ready(target)
        assert c.solve_response(MODEL, {"a": field}).version == published == "2"


def test_the_torch_watchdog_reports_a_job_that_does_not_return():
    release = threading.Event()

    async def scenario() -> tuple[float, float, float]:
        thread = TorchThread()
        idle = thread.busy_for()
        stuck = asyncio.ensure_future(thread.run(release.wait))
        await asyncio.sleep(0.3)
        busy = thread.busy_for()
        release.set()
        assert await stuck is True
        return idle, busy, thread.busy_for()

    idle, busy, after = asyncio.run(scenario())
    assert idle == 0 and after == 0
    assert busy >= 0.25, busy
    # Serve's check_health fails with this reason, and Serve replaces the replica.
    assert health_problem(WEDGED_AFTER_S + 1, False).startswith(
        f"one torch job has run for {WEDGED_AFTER_S + 1:.0f} s"
    )
    assert health_problem(WEDGED_AFTER_S - 1, False) == "" and health_problem(0, False) == ""
    assert "repository" in health_problem(0, True)
