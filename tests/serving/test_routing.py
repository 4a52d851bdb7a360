"""Solve with max_error through the session's real Ray Serve gRPC proxy: the bundled darcy-fno and
ns-fno under cards with a ledger measured here; the path the router chose, its estimate, and the true
error against the family's reference; and calls without max_error answered exactly as before."""

import shutil
import time

import grpc
import numpy as np
import pytest

from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.repository import ModelRepository, read_card, write_card
from pdeserve.operators.surrogate import load_surrogate
from pdeserve.operators.validation import measure_ledger, validation_samples
from pdeserve.serving.client import SolverClient, SolverError

APP = "routed"
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def routed(serve_apps, bundled_repo, tmp_path_factory):
    """``(client, cards)``: an application serving the bundled models' newest weights under cards with a
    ledger measured on a few fresh samples."""
    bundled = ModelRepository(bundled_repo)
    repo = ModelRepository(tmp_path_factory.mktemp("routed"))
    cards = {}
    # Navier-Stokes: the rungs on grids up to 16 keep the fixture short.
    for name, samples, finest in (("darcy-fno", 10, None), ("ns-fno", 5, 16)):
        version, source = bundled.resolve(name, None)
        surrogate = load_surrogate(source, name, version)
        ledger = measure_ledger(surrogate, samples, seed=11, finest=finest, reference_samples=1)
        card = read_card(source).replace(ledger=ledger)

        def write(folder, source=source, card=card):
            shutil.copy(source / card.weights.file, folder / card.weights.file)
            write_card(folder, card)

        repo.publish(name, write)
        cards[name] = card
    target = serve_apps.deploy(APP, repo.root)
    with SolverClient(target, timeout=120, application=APP) as client:
        deadline = time.monotonic() + 60
        probe = {"a": np.ones((64, 64), np.float32)}
        while True:  # the proxy routes to a new application within moments of its start
            try:
                client.solve_response("darcy-fno", probe, max_error=0.5)  # only this application routes
                break
            except SolverError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield client, cards
    serve_apps.delete(APP)


def inputs(card, name: str, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fresh inputs of ``card``'s distribution (float32) and their classical solutions on the finer grid
    the ledger measures against."""
    from pdeserve.operators.surrogate import Surrogate

    holder = Surrogate.__new__(Surrogate)
    holder.card = card
    pairs = validation_samples(holder, card.training_resolution[-1], n, seed=99, finer=True)
    return {k: pairs.x[:, c].astype(np.float32) for c, k in enumerate(card.input_names)}, pairs.y


def true_errors(response, card, truth: np.ndarray) -> list[float]:
    from pdeserve.serving.tensors import from_tensor

    out = np.stack([from_tensor(response.outputs[k], k) for k in card.output_names], axis=1)
    return [relative_l2(out[i : i + 1], truth[i : i + 1]) for i in range(len(truth))]


@pytest.mark.parametrize("method", ["auto", "surrogate", "classical"])
def test_darcy_answers_within_max_error_by_the_path_the_ledger_predicts(routed, method):
    client, cards = routed
    card = cards["darcy-fno"]
    x, truth = inputs(card, "darcy-fno", 3)
    level = 0.08  # above the surrogate's recorded error on the ledger's ten samples
    response = client.solve_response("darcy-fno", x, max_error=level, method=method, reference=True)
    for check in response.checks:
        assert check.measured_ms > 0 and check.predicted_ms > 0
        if method == "surrogate":
            assert check.path in (1, 3)  # the surrogate, or a classical answer where its estimate missed
        else:  # the coarse direct solves are cheaper than the surrogate at this error
            assert check.path == 3 and check.rung.startswith("direct LDL^T, grid")
            assert check.estimated_relative_l2 <= level and check.estimate_method == 3
        if check.path == 1:
            assert check.estimated_relative_l2 <= level
    assert max(true_errors(response, card, truth)) <= level
    assert response.reference_relative_l2["u"] <= level


def test_navier_stokes_answers_by_a_coarse_rung_within_max_error(routed):
    client, cards = routed
    card = cards["ns-fno"]
    x, truth = inputs(card, "ns-fno", 2)
    response = client.solve_response("ns-fno", x, max_error=0.02)
    assert {c.rung for c in response.checks} <= {
        e.rung for e in card.ledger.entries if e.path == "rung" and e.error_quantile <= 0.02
    }
    assert all(c.path == 3 and "CNAB2" in c.rung for c in response.checks)
    assert max(true_errors(response, card, truth)) <= 0.02


def test_an_error_no_path_reaches_is_out_of_range_before_any_work(routed):
    client, cards = routed
    x, _ = inputs(cards["darcy-fno"], "darcy-fno", 1)
    with pytest.raises(SolverError) as refused:
        client.solve_response("darcy-fno", x, max_error=1e-6, method="surrogate")
    assert refused.value.code == grpc.StatusCode.OUT_OF_RANGE
    message = str(refused.value)
    assert "best error" in message and "0.0" in message and "/work" not in message
    with pytest.raises(SolverError) as bad:
        client.solve_response("darcy-fno", x, method="classical")
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_calls_without_max_error_answer_exactly_as_before(routed, bundled_repo):
    from pdeserve.operators import load_model
    from pdeserve.serving.tensors import from_tensor

    client, cards = routed
    x, _ = inputs(cards["darcy-fno"], "darcy-fno", 2)
    old = client._call(client.stub.Solve, _request(x))
    new = client.solve_response("darcy-fno", x)
    assert old.outputs["u"].data == new.outputs["u"].data
    assert list(old.checks) == list(new.checks)
    assert all(c.rung == "" and c.predicted_ms == 0 for c in new.checks)
    # The surrogate's forward pass, as in process (the same weights), not a classical path.
    expected = load_model(bundled_repo, "darcy-fno").predict(x)["u"]
    np.testing.assert_allclose(from_tensor(new.outputs["u"], "u"), expected, rtol=1e-4, atol=1e-6)


def _request(x):
    from pdeserve.protos.v1 import solver_pb2 as pb
    from pdeserve.serving.tensors import to_tensor

    request = pb.SolveRequest(model="darcy-fno")
    for name, array in x.items():
        request.inputs[name].CopyFrom(to_tensor(array))
    return request


def test_a_method_outside_the_enum_is_invalid_argument_and_the_server_keeps_serving(routed):
    from pdeserve.protos.v1 import solver_pb2 as pb
    from pdeserve.serving.tensors import to_tensor

    client, _ = routed
    for method in (3, -1):  # proto3 enums are open: any number reaches the server
        request = pb.SolveRequest(model="darcy-fno", max_error=0.1, method=method)
        request.inputs["a"].CopyFrom(to_tensor(np.full((64, 64), 3.0, np.float32)))
        with pytest.raises(SolverError) as refused:
            client._call(client.stub.Solve, request)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"SolveRequest.method is {method}; use 0 (auto)" in str(refused.value)
    assert client.solve("darcy-fno", {"a": np.full((64, 64), 3.0, np.float32)})["u"].shape == (64, 64)
