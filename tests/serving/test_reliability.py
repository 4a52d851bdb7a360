"""Overload and faults through the real Ray Serve gRPC proxy: a bounded queue refuses quickly instead of
hanging, deadlines are honoured, a killed replica is replaced while clients keep calling, and malformed
models are refused one by one while the others keep serving."""

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.options import ServingOptions

MODEL = "darcy-fno"
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fields():
    rng = np.random.default_rng(11)
    return np.stack([darcy_sample(DarcyParameters(), 64, rng)["a"] for _ in range(48)]).astype(np.float32)


def test_overload_is_refused_quickly_and_never_hangs(deploy_app, bundled_repo, fields):
    # One request in flight and one queued: the rest of a burst of 12 slow requests must be refused
    # at once (Ray Serve answers a full queue with UNAVAILABLE), none may wait for its deadline.
    target = deploy_app(
        "bounded", bundled_repo, ServingOptions(max_ongoing_requests=1, max_queued_requests=1)
    )

    def call(_: int) -> tuple[str, float]:
        started = time.monotonic()
        with SolverClient(target, application="bounded", retries=0, timeout=60) as c:
            try:
                c.solve(MODEL, {"a": fields})  # a batch of 48: a few hundred ms of inference
                return "OK", time.monotonic() - started
            except SolverError as exc:
                return exc.code.name, time.monotonic() - started

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(call, range(12)))
    codes = [code for code, _ in outcomes]
    refused = [seconds for code, seconds in outcomes if code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED")]
    assert set(codes) <= {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}, codes
    assert codes.count("OK") >= 2 and len(refused) >= 6, codes
    assert max(refused) < 30, outcomes  # refused, not left to run into the 60 s deadline
    with SolverClient(target, application="bounded") as c:  # and it still serves afterwards
        assert c.solve(MODEL, {"a": fields[0]})["u"].shape == (64, 64)


def test_deadline_is_honoured(grpc_target, fields):
    with SolverClient(grpc_target, retries=0, timeout=0.001) as c, pytest.raises(SolverError) as err:
        c.solve(MODEL, {"a": fields})
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with SolverClient(grpc_target) as c:
        assert c.solve(MODEL, {"a": fields[0]})["u"].shape == (64, 64)


def _replica_actors(app: str) -> list[str]:
    import ray

    return [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == "serve" and actor["name"].startswith(f"SERVE_REPLICA::{app}#")
    ]


def test_killed_replica_is_replaced_while_clients_keep_calling(deploy_app, bundled_repo, fields):
    import ray

    target = deploy_app("fragile", bundled_repo)
    (replica,) = _replica_actors("fragile")
    outcomes: list[tuple[float, str]] = []
    details: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with SolverClient(target, application="fragile", retries=0, timeout=30) as c:
            while not stop.is_set():
                try:
                    c.solve(MODEL, {"a": fields[0]})
                    outcomes.append((time.monotonic(), "OK"))
                except SolverError as exc:
                    outcomes.append((time.monotonic(), exc.code.name))
                    details.append(str(exc)[:300])
                    time.sleep(0.05)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)
    deadline = killed_at + 90
    while time.monotonic() < deadline and not any(t > killed_at + 1 and c == "OK" for t, c in outcomes):
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for worker in workers:
        worker.join()

    after = [code for t, code in outcomes if t > killed_at]
    recovered = [t for t, code in outcomes if t > killed_at and code == "OK"]
    assert recovered, f"no successful request within 90 s of the kill: {after[-5:]}"
    assert _replica_actors("fragile") and _replica_actors("fragile") != [replica]
    # Only the requests in flight on the killed replica fail (the proxy reports the dead actor as
    # INTERNAL); later ones wait in the proxy for the new replica, or get UNAVAILABLE.
    failed = [code for code in after if code != "OK"]
    assert set(failed) <= {"INTERNAL", "UNAVAILABLE"}, details
    assert failed.count("INTERNAL") <= len(workers), details
    tail = [code for t, code in outcomes if t > recovered[0]]
    assert tail.count("OK") >= 0.9 * len(tail), tail
    print(
        f"replica kill: {len(failed)} of {len(after)} requests failed ({sorted(set(failed))}); "
        f"first success {recovered[0] - killed_at:.1f} s after the kill"
    )


def test_replicas_option_runs_that_many_replicas_behind_one_port(deploy_app, bundled_repo, fields):
    target = deploy_app("pair", bundled_repo, replica_cpus=0.25, replicas=2)
    assert len(_replica_actors("pair")) == 2

    def call(i: int) -> tuple[int, int]:
        with SolverClient(target, application="pair") as c:
            return c.solve(MODEL, {"a": fields[i % len(fields)]})["u"].shape

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, range(16))) == [(64, 64)] * 16


def test_malformed_models_are_isolated_and_the_others_keep_serving(
    deploy_app, bundled_repo, bundled_versions, tmp_path, fields
):
    """A card naming an argument its architecture lacks, and an older-format version whose metrics file
    holds a list: the replica starts, lists the good model only, and refuses the broken ones by name."""
    repo = tmp_path / "repo"
    shutil.copytree(bundled_repo / MODEL / bundled_versions[-1], repo / MODEL / "1")
    shutil.copytree(bundled_repo / MODEL / bundled_versions[-1], repo / "bad-arguments" / "1")
    card = repo / "bad-arguments" / "1" / "config.json"
    document = json.loads(card.read_text())
    document["arguments"]["no_such_argument"] = 1
    card.write_text(json.dumps(document))
    shutil.copytree(bundled_repo / MODEL / "1", repo / "bad-metrics" / "1")  # the older card format
    (repo / "bad-metrics" / "1" / "metrics.json").write_text("[1, 2]")

    target = deploy_app("isolated", repo)
    with SolverClient(target, application="isolated", retries=0) as c:
        assert [m.name for m in c.list_models()] == [MODEL]
        assert c.health() == "SERVING"
        for name in ("bad-arguments", "bad-metrics"):
            for call, args in ((c.solve, (name, {"a": fields[0]})), (c.get_model, (name,))):
                with pytest.raises(SolverError) as err:
                    call(*args)
                assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION, err.value
                assert f"model {name} version 1" in str(err.value) and str(tmp_path) not in str(err.value)
        assert c.solve(MODEL, {"a": fields[0]})["u"].shape == (64, 64)
