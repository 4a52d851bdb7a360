"""Batching, metrics, authentication, request limits, hot version pickup and malformed requests,
through the session's real Ray Serve gRPC proxy (extra applications share its Ray instance)."""

import os
import shutil
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.operators.repository import ModelRepository
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.protos.v1 import solver_pb2_grpc
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.options import ServingOptions
from pdeserve.serving.server import APP_NAME

MODEL = "darcy-fno"
# How often Ray exports what its processes record (tests/conftest.py sets it for the session's Ray; Ray
# exports no more often than once a second). Ray's variable is case-sensitive.
INTERVAL_MS = os.environ.get("RAY_metrics_report_interval_ms", "10000")  # noqa: SIM112
METRICS_EXPORT_S = max(int(INTERVAL_MS), 1000) / 1000
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def field():
    return darcy_sample(DarcyParameters(), 64, np.random.default_rng(5))["a"].astype(np.float32)


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_pdeserve_"):
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _total(samples, name: str, **labels) -> float:
    return sum(v for (n, tags), v in samples.items() if n == name and set(labels.items()) <= tags)


def _poll(port: int, arrived, timeout: float = 90) -> dict[tuple[str, frozenset], float]:
    """Scrape until ``arrived(samples)`` holds or ``timeout`` seconds pass (Ray's metrics agent exports
    on an interval); the last samples."""
    deadline = time.monotonic() + timeout
    while True:
        samples = _scrape(port)
        if arrived(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(METRICS_EXPORT_S / 2)


def test_concurrent_clients_are_batched_answered_correctly_and_counted(
    deploy_app, grpc_target, metrics_port, bundled_repo, tmp_path
):
    # A model name no other test calls, in its own application: its counters start from zero, so
    # late exports of other tests' traffic cannot leak into the deltas.
    name = "darcy-metered"
    shutil.copytree(bundled_repo / MODEL, tmp_path / name)
    deploy_app("metered", tmp_path)
    rng = np.random.default_rng(0)
    fields = np.stack([darcy_sample(DarcyParameters(), 64, rng)["a"] for _ in range(16)]).astype(np.float32)
    expected = load_model(bundled_repo, MODEL).predict({"a": fields})["u"]
    before = _scrape(metrics_port)
    errors, results = [], {}

    def client(i: int) -> None:
        with SolverClient(grpc_target, timeout=60, application="metered") as c:
            try:
                results[i] = [c.solve(name, {"a": fields[i]})["u"] for _ in range(5)]
            except SolverError as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(16):
        for u in results[i]:
            np.testing.assert_allclose(u, expected[i], atol=1e-5)
    with SolverClient(grpc_target, application="metered") as c, pytest.raises(SolverError):
        c.solve(name, {"a": fields[0][:10]})  # one INVALID_ARGUMENT for the error counter

    def delta(after, metric, **labels):
        return _total(after, metric, model=name, **labels) - _total(before, metric, model=name, **labels)

    def counts(after):
        return (
            delta(after, "ray_pdeserve_requests_total", code="OK"),
            delta(after, "ray_pdeserve_requests_total", code="INVALID_ARGUMENT"),
            delta(after, "ray_pdeserve_batch_size_count"),
            delta(after, "ray_pdeserve_forward_passes_total"),
        )

    def loaded(after):  # the load time is a gauge, exported on its own schedule
        return _total(after, "ray_pdeserve_model_load_seconds", model=name) > 0

    after = _poll(
        metrics_port, lambda after: counts(after)[:3] == (80, 1, counts(after)[3]) and loaded(after)
    )
    passes = counts(after)[3]
    assert counts(after) == (80, 1, passes, passes)
    # Requests arriving during a forward pass join the next one together (BatchGate); @serve.batch
    # alone forms a batch while the previous one runs, close to one pass per call.
    assert passes <= 26
    assert _total(after, "ray_pdeserve_request_latency_ms_count", model=name) >= 81
    assert _total(after, "ray_pdeserve_model_load_seconds", model=name) > 0
    # Ray drops a gauge series no record refreshed within two export intervals: the load time, recorded
    # at the load, stays exported while the replica runs.
    time.sleep(3 * METRICS_EXPORT_S)
    assert _total(_scrape(metrics_port), "ray_pdeserve_model_load_seconds", model=name) > 0


@pytest.fixture(scope="module")
def damaged(serve_apps, bundled_repo, bundled_versions, tmp_path_factory):
    """An application whose repository holds, beside the bundled model, a copy whose weights file is
    gone, a copy whose card names a PDE no installed distribution registers (it loads and solves; its
    classical reference is FAILED_PRECONDITION), and a copy whose card holds a PDE parameter the solver
    cannot use (its reference fails unexpectedly)."""
    repo = tmp_path_factory.mktemp("damaged")
    for name in (MODEL, "darcy-unloadable", "darcy-unknown-pde", "darcy-bad-forcing"):  # newest, as 1
        shutil.copytree(bundled_repo / MODEL / bundled_versions[-1], repo / name / "1")
    (repo / "darcy-unloadable" / "1" / "model.safetensors").unlink()
    card = repo / "darcy-unknown-pde" / "1" / "config.json"
    card.write_text(card.read_text().replace('"pde": "darcy"', '"pde": "no-such-pde"'))
    card = repo / "darcy-bad-forcing" / "1" / "config.json"
    card.write_text(card.read_text().replace('"forcing": 1.0', '"forcing": "one"'))
    yield serve_apps.deploy("damaged", repo)
    serve_apps.delete("damaged")


def test_models_are_described_from_their_cards_without_loading_weights(damaged, field):
    with SolverClient(damaged, application="damaged") as c:
        models = {m.name: m for m in c.list_models()}
        assert sorted(models) == ["darcy-bad-forcing", MODEL, "darcy-unknown-pde", "darcy-unloadable"]
        unloadable = c.get_model("darcy-unloadable")
        assert unloadable == models["darcy-unloadable"]
        assert (unloadable.architecture, unloadable.version, list(unloadable.versions)) == ("fno", "1", ["1"])
        assert unloadable.parameter_count == models[MODEL].parameter_count > 0
        with pytest.raises(SolverError) as err:  # solving needs the weights
            c.solve("darcy-unloadable", {"a": field})
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with triton.InferenceServerClient(damaged) as oip:
        metadata = oip.get_model_metadata("darcy-unloadable", headers={"application": "damaged"})
        assert (metadata.platform, [t.name for t in metadata.inputs]) == ("pdeserve/fno", ["a"])


def test_an_unexpected_failure_is_internal_names_no_path_and_is_counted(damaged, metrics_port, field):
    with SolverClient(damaged, application="damaged") as c:
        with pytest.raises(SolverError) as err:  # its checks use a forcing the solver cannot take
            c.solve_response("darcy-bad-forcing", {"a": field}, reference=True)
        assert err.value.code == grpc.StatusCode.INTERNAL
        assert "internal error (" in str(err.value) and "/" not in str(err.value)
        with pytest.raises(SolverError) as unknown:  # a family nobody registers: it says what is missing
            c.solve_response("darcy-unknown-pde", {"a": field}, reference=True)
        assert unknown.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "'no-such-pde' is not installed here" in str(unknown.value)
        assert c.solve("darcy-unknown-pde", {"a": field})["u"].shape == (64, 64)  # the replica serves on

    def count(samples, name, code):
        return _total(samples, "ray_pdeserve_requests_total", model=name, method="Solve", code=code)

    def counted(samples):
        return (count(samples, "darcy-bad-forcing", "INTERNAL"), count(samples, "darcy-unknown-pde", "OK"))

    after = _poll(metrics_port, lambda samples: all(counted(samples)))
    assert counted(after) == (1, 1)


@pytest.fixture(scope="module")
def secure(serve_apps, bundled_repo, node_token):
    """Authentication as the Helm chart configures it: the Serve config names the variable that holds
    the token on the Ray nodes, never the token."""
    variable, token = node_token
    assert token == "s3cret"
    options = ServingOptions(auth_token_env=variable, max_request_bytes=100_000)
    yield serve_apps.deploy("secure", bundled_repo, options)
    serve_apps.delete("secure")


def test_token_is_required_when_configured(secure, field):
    for token in (None, "wrong"):
        with SolverClient(secure, token=token, application="secure") as c, pytest.raises(SolverError) as err:
            c.solve(MODEL, {"a": field})
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in str(err.value)
    with SolverClient(secure, token="s3cret", application="secure") as c:
        assert c.solve(MODEL, {"a": field})["u"].shape == (64, 64)
        assert c.health() == "SERVING"  # probes need no token


def test_oversized_request_is_resource_exhausted_and_the_next_one_succeeds(secure, field):
    with SolverClient(secure, token="s3cret", application="secure") as c:
        with pytest.raises(SolverError) as err:
            c.solve(MODEL, {"a": np.stack([field] * 8).astype(np.float64)})  # 262 kB > 100 kB
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "100000" in str(err.value)
        assert c.solve(MODEL, {"a": field})["u"].shape == (64, 64)


def test_new_version_is_served_without_restart_or_failed_requests(
    deploy_app, grpc_target, bundled_repo, bundled_versions, tmp_path, field
):
    repo = tmp_path / "repo"
    shutil.copytree(bundled_repo / MODEL / bundled_versions[-1], repo / MODEL / "1")
    deploy_app("hot", repo)
    failures, versions, stop = [], [], threading.Event()

    def load() -> None:
        with SolverClient(grpc_target, application="hot") as c:
            while not stop.is_set():
                try:
                    versions.append(c.solve_response(MODEL, {"a": field}).version)
                except SolverError as exc:
                    failures.append(exc)

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(1.0)
    published = ModelRepository(repo).publish(
        MODEL, lambda folder: shutil.copytree(repo / MODEL / "1", folder, dirs_exist_ok=True)
    )
    deadline = time.monotonic() + 60
    while (not versions or versions[-1] != "2") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    worker.join()
    assert published == "2" and not failures
    assert versions[0] == "1" and versions[-1] == "2", versions[-3:]
    with SolverClient(grpc_target, application="hot") as c:
        info = c.get_model(MODEL)
        assert info.version == "2" and list(info.versions) == ["1", "2"]
        assert c.solve_response(MODEL, {"a": field}, version="1").version == "1"


TENSOR = st.builds(
    pb.Tensor,
    shape=st.lists(st.integers(0, 80), max_size=4),
    dtype=st.sampled_from([0, 1, 2, 7]),
    data=st.binary(max_size=300),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from([MODEL, "", "nope", "../etc"]),
    version=st.sampled_from(["", "1", "99", "x"]),
    inputs=st.dictionaries(st.sampled_from(["a", "b", ""]), TENSOR, max_size=2),
)
def test_malformed_requests_get_a_precise_status_and_never_break_the_server(
    grpc_target, model, version, inputs
):
    request = pb.SolveRequest(model=model, version=version, inputs=inputs)
    with grpc.insecure_channel(grpc_target) as channel:
        try:
            # Named explicitly: other tests add and remove applications on the same proxy.
            solver_pb2_grpc.SolverStub(channel).Solve(
                request, timeout=30, metadata=[("application", APP_NAME)]
            )
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert exc.details() and "Application" not in exc.details(), exc.details()
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), code


def test_server_still_answers_after_the_malformed_requests(grpc_target, field, bundled_repo):
    with SolverClient(grpc_target, application=APP_NAME) as c:
        np.testing.assert_allclose(
            c.solve(MODEL, {"a": field})["u"],
            load_model(bundled_repo, MODEL).predict({"a": field})["u"],
            atol=1e-5,
        )


def test_batching_options_out_of_range_are_refused_with_their_name():
    from pdeserve.serving.app import app_builder

    for bad in ({"batch_hold_fraction": 1.5}, {"batch_hold_fraction": float("nan")}, {"batch_wait_s": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServingOptions(**bad)
    with pytest.raises(ValueError, match="batch_hold_fraction must be in"):
        app_builder({"repo": "models", "batch_hold_fraction": "2"})


def test_auth_token_resolution():
    """A token given directly, or through the variable a Serve config names; never both, never an
    empty variable (a replica asked for authentication refuses to start open)."""
    assert ServingOptions().resolved_auth_token({"X": "t"}) == ""
    assert ServingOptions(auth_token="t").resolved_auth_token({}) == "t"
    assert ServingOptions(auth_token_env="X").resolved_auth_token({"X": " t \n"}) == "t"
    with pytest.raises(ValueError, match="X is unset or empty"):
        ServingOptions(auth_token_env="X").resolved_auth_token({"X": " "})
    with pytest.raises(ValueError, match="not both"):
        ServingOptions(auth_token="t", auth_token_env="X").resolved_auth_token({"X": "t"})
