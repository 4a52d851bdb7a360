"""Work a request can make a replica do is bounded, through a real Ray Serve gRPC channel: a request at the
grid-point limit runs as several bounded forward passes while small requests stacked with it are
answered, requests above the limits are refused before any work, and a message above the size limit is
refused by the gRPC ingress itself."""

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from test_serving_features import _poll, _total

from pdeserve.datagen.burgers import BurgersParameters
from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.datagen.families import get_family
from pdeserve.operators import load_model
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.surrogate import Surrogate
from pdeserve.operators.training import prepare, publish
from pdeserve.operators.validation import fresh_samples
from pdeserve.serving.app import MAX_REFERENCE_POINTS, MAX_REQUEST_POINTS, reference_solutions
from pdeserve.serving.batching import MAX_PASS_POINTS, micro_batches
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.options import ServingOptions

APP = "bounds"
NAME = "darcy-bounded"  # a name no other test calls: its counters start from zero
SIDE = 64
TRAJECTORY, STATES, BURGERS_SIDE = "burgers-states", 20, 64
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fields() -> np.ndarray:
    rng = np.random.default_rng(8)
    return np.stack([darcy_sample(DarcyParameters(), SIDE, rng)["a"] for _ in range(8)]).astype(np.float32)


@pytest.fixture(scope="module")
def bounded(serve_apps, bundled_repo, bundled_versions, tmp_path_factory):
    """The bundled model as ``darcy-bounded``, with a request limit of 24 MiB (a request at the
    grid-point limit is 16 MiB of float32), beside an untrained Burgers model whose answer holds
    :data:`STATES` states per initial state. Its card names a family not installed here: its answers
    carry no checks, whose coarse solves would take 10 ms for each of the thousands of samples."""
    repo = tmp_path_factory.mktemp("bounds")
    shutil.copytree(bundled_repo / "darcy-fno" / bundled_versions[-1], repo / NAME / "1")
    params = BurgersParameters(final_time=1.0, record_every=1.0 / STATES).for_resolution(BURGERS_SIDE)
    data = fresh_samples(get_family("burgers"), params, BURGERS_SIDE, 2, seed=3)
    run = prepare(data, "fno", {"n_modes": [4], "hidden_channels": 4, "n_layers": 1}, TrainingSettings())
    publish(repo, TRAJECTORY, Surrogate(TRAJECTORY, "1", run.card, run.config.build().eval()))
    card = repo / TRAJECTORY / "1" / "config.json"
    card.write_text(card.read_text().replace('"pde": "burgers"', '"pde": "burgers-not-installed"', 1))
    yield serve_apps.deploy(APP, repo, ServingOptions(max_request_bytes=24 * 2**20))
    serve_apps.delete(APP)


def _status(target: str, inputs: dict, reference: bool = False) -> tuple[grpc.StatusCode, str]:
    with (
        SolverClient(target, application=APP, retries=0, timeout=120) as c,
        pytest.raises(SolverError) as err,
    ):
        c.solve_response(NAME, inputs, reference=reference)
    return err.value.code, str(err.value)


def test_a_request_at_the_point_limit_runs_in_bounded_passes_beside_small_ones(
    bounded, bundled_repo, metrics_port, fields
):
    samples = MAX_REQUEST_POINTS // SIDE**2  # 1024 samples of 64 x 64
    large = np.resize(fields, (samples, SIDE, SIDE))
    model = load_model(bundled_repo, "darcy-fno")
    expected = model.predict({"a": fields})["u"]
    with SolverClient(bounded, application=APP, timeout=300) as c:
        answer = c.solve(NAME, {"a": large})["u"]
    assert answer.shape == (samples, SIDE, SIDE)
    np.testing.assert_allclose(answer[-8:], expected, atol=1e-5, rtol=0)

    def passes(samples_now):
        return _total(samples_now, "ray_pdeserve_forward_passes_total", model=NAME)

    def answered(samples_now):
        return _total(samples_now, "ray_pdeserve_requests_total", model=NAME, code="OK")

    counted = _poll(metrics_port, lambda s: answered(s) == 1 and passes(s) > 0)
    # One request, split into passes of at most MAX_PASS_POINTS grid points.
    assert passes(counted) == samples * SIDE**2 // MAX_PASS_POINTS == 4

    # Small requests arriving while the large one runs are answered, and equal to one-by-one answers.
    def solve(a: np.ndarray) -> np.ndarray:
        with SolverClient(bounded, application=APP, timeout=300) as c:
            return c.solve(NAME, {"a": a})["u"]

    with ThreadPoolExecutor(7) as pool:
        big = pool.submit(solve, large)
        smalls = list(pool.map(solve, [fields[i % 8] for i in range(12)]))
    np.testing.assert_allclose(big.result(), answer, atol=1e-5, rtol=0)
    for i, u in enumerate(smalls):
        np.testing.assert_allclose(u, expected[i % 8], atol=1e-5, rtol=0)


def test_requests_above_the_point_limits_are_refused_before_any_work(bounded, fields):
    over = np.resize(fields, (MAX_REQUEST_POINTS // SIDE**2 + 1, SIDE, SIDE))  # 16 MiB + one sample
    code, message = _status(bounded, {"a": over})
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{MAX_REQUEST_POINTS + SIDE**2} grid points" in message and str(MAX_REQUEST_POINTS) in message
    reference = np.resize(fields, (MAX_REFERENCE_POINTS // SIDE**2 + 1, SIDE, SIDE))
    code, message = _status(bounded, {"a": reference}, reference=True)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "reference" in message and str(MAX_REFERENCE_POINTS) in message
    with SolverClient(bounded, application=APP) as c:  # the replica keeps serving
        assert c.solve(NAME, {"a": fields[0]})["u"].shape == (SIDE, SIDE)


def test_an_answer_above_the_size_limit_is_refused_before_the_forward_pass(bounded, metrics_port):
    # 6,000 initial states of 64 points: a 1.5 MB request whose answer (20 states each) is 30.7 MB.
    u0 = np.random.default_rng(0).standard_normal((6000, BURGERS_SIDE)).astype(np.float32)
    with SolverClient(bounded, application=APP, retries=0, timeout=120) as c:
        with pytest.raises(SolverError) as err:
            c.solve_response(TRAJECTORY, {"u0": u0})
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"the answer would hold {6000 * STATES * BURGERS_SIDE * 4} bytes" in str(err.value)
        assert str(24 * 2**20) in str(err.value)
        answer = c.solve(TRAJECTORY, {"u0": u0[:4000]})  # 20.5 MB: within the limit, answered
    assert answer[f"u@t={1.0 / STATES:g}"].shape == (4000, BURGERS_SIDE) and len(answer) == STATES
    samples = _poll(metrics_port, lambda s: _total(s, "ray_pdeserve_requests_total", model=TRAJECTORY) == 2)
    # The refused request never reached a forward pass: only the answered one's samples did.
    passes = len(micro_batches(4000, BURGERS_SIDE))
    assert _total(samples, "ray_pdeserve_forward_passes_total", model=TRAJECTORY) == passes
    assert _total(samples, "ray_pdeserve_requests_total", model=TRAJECTORY, code="RESOURCE_EXHAUSTED") == 1


def test_a_message_above_the_size_limit_is_refused_by_the_grpc_ingress(bounded, fields):
    # 25 MiB against a 24 MiB limit: gRPC refuses it before Serve parses it (Serve's limit is 2 GiB).
    code, message = _status(bounded, {"a": np.resize(fields, (800, SIDE, SIDE)).astype(np.float64)})
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {24 * 2**20})" in message, message
    with SolverClient(bounded, application=APP) as c:
        assert c.solve(NAME, {"a": fields[0]})["u"].shape == (SIDE, SIDE)


def test_reference_solves_stop_once_their_caller_has_gone(bundled_repo, fields):
    model = load_model(bundled_repo, "darcy-fno")
    inputs = {"a": fields[:2]}
    outputs = model.predict(inputs)
    stop = threading.Event()
    truth, error = reference_solutions(model, inputs, outputs, stop)["u"]
    assert truth.shape == (2, SIDE, SIDE) and 0 < error < 0.1
    stop.set()  # what a timed-out or cancelled request does: the samples left are not solved
    assert reference_solutions(model, inputs, outputs, stop) == {}
