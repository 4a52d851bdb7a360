"""Every answer's check, through the session's real Ray Serve gRPC proxy: the error estimate of a
calibrated model, refinement to a request's tolerance (checked against the direct solve), its limits,
the validated grid range, inputs outside the training range, and the answers counted by path."""

import math
import shutil
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families

from pdeserve.datagen.darcy import DarcyParameters, DarcySolver, assemble_darcy, darcy_sample
from pdeserve.datagen.grids import UnitSquareGrid
from pdeserve.operators.card import ErrorCalibration, ResolutionValidation, SideError, ValueRange
from pdeserve.operators.repository import ModelRepository, read_card, write_card
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.server import APP_NAME

BUNDLED = "darcy-fno"
NAME = "darcy-checked"
APP = "checked"
CALIBRATION = ErrorCalibration(indicator="darcy", coverage=0.9, scale=1.5, n_samples=40)
# Validated from 48 to 96: 32 and 128 have more than twice the training side's error.
VALIDATION = ResolutionValidation(
    training_side=64,
    sides=(
        SideError(32, 0.09, 8),
        SideError(48, 0.04, 8),
        SideError(64, 0.03, 8),
        SideError(96, 0.05, 8),
        SideError(128, 0.08, 8),
    ),
    max_factor=2.0,
)
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def checked(serve_apps, bundled_repo, tmp_path_factory):
    """``(target, card)``: an application serving the bundled weights under a card with a calibration,
    a resolution validation and input ranges."""
    repo = ModelRepository(tmp_path_factory.mktemp("checked"))
    source = bundled_repo / BUNDLED / "1"
    card = read_card(source).replace(
        calibration=CALIBRATION, validation=VALIDATION, input_ranges=(ValueRange("a", 3.0, 12.0),)
    )

    def write(folder):
        shutil.copy(source / card.weights.file, folder / card.weights.file)
        write_card(folder, card)

    repo.publish(NAME, write)
    yield serve_apps.deploy(APP, repo.root), card
    serve_apps.delete(APP)


@pytest.fixture(scope="module")
def client(checked):
    with SolverClient(checked[0], timeout=60, application=APP) as c:
        yield c


def fields(n: int, side: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([darcy_sample(DarcyParameters(), side, rng)["a"] for _ in range(n)]).astype(np.float32)


def relative_residual(a: np.ndarray, u: np.ndarray) -> float:
    n = a.shape[-1]
    matrix = assemble_darcy(a.astype(np.float64), UnitSquareGrid(n))
    residual = 1.0 - matrix @ u[1:-1, 1:-1].astype(np.float64).ravel()
    return float(np.linalg.norm(residual) / math.sqrt(matrix.shape[0]))


def answers_by_path(port: int, path: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ray_pdeserve_answers_total"
        and s.labels.get("model") == NAME
        and s.labels["path"] == path
    )


def test_every_answer_carries_its_estimate_with_the_cards_coverage(client):
    answer = client.solve_checked(NAME, {"a": fields(3, 64)})
    assert answer.outputs["u"].shape == (3, 64, 64) and answer.outputs["u"].dtype == np.float32
    assert len(answer.checks) == 3
    for check in answer.checks:
        assert check.path == "surrogate" and check.residual is None and check.refine_iterations == 0
        assert 0 < check.indicator < 0.5
        assert check.estimated_relative_l2 == pytest.approx(CALIBRATION.scale * check.indicator)
        assert check.coverage == pytest.approx(0.9)
    assert answer.grid_validated and answer.out_of_range_inputs == []


def test_the_bundled_model_checks_every_sample_of_a_batch(grpc_target):
    with SolverClient(grpc_target, timeout=60, application=APP_NAME) as c:
        answer = c.solve_checked(BUNDLED, {"a": fields(2, 64)})
        single = c.solve_checked(BUNDLED, {"a": fields(1, 64)[0]})
    assert len(answer.checks) == 2 and len(single.checks) == 1
    assert all(check.indicator > 0 and check.path == "surrogate" for check in answer.checks + single.checks)


def test_a_tolerance_refines_answers_to_the_direct_solves_accuracy(client, checked, metrics_port):
    a = fields(2, 63, seed=8)
    surrogate = client.solve_checked(NAME, {"a": a})
    before = answers_by_path(metrics_port, "refined")
    answer = client.solve_checked(NAME, {"a": a}, tolerance=1e-6)
    assert answer.outputs["u"].dtype == np.float64
    for i, check in enumerate(answer.checks):
        u = answer.outputs["u"][i]
        truth = DarcySolver(UnitSquareGrid(63)).solve(a[i].astype(np.float64), 1.0)
        assert check.path == "refined" and check.refine_iterations > 0 and check.refine_ms > 0
        assert check.residual <= 1e-6
        assert relative_residual(a[i], u) <= 1e-6
        assert np.linalg.norm(u - truth) / np.linalg.norm(truth) < 1e-5
        # the surrogate's own answer was two orders of magnitude further from the truth
        before_error = np.linalg.norm(surrogate.outputs["u"][i] - truth) / np.linalg.norm(truth)
        assert before_error > 1e-3
        assert check.estimated_relative_l2 < surrogate.checks[i].estimated_relative_l2 / 100
    deadline = time.monotonic() + 90  # Ray's metrics agent exports on an interval
    while answers_by_path(metrics_port, "refined") - before < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answers_by_path(metrics_port, "refined") - before == 2


@pytest.mark.parametrize("tolerance", [-1.0, math.nan, 2.0])
def test_a_tolerance_outside_0_1_is_an_invalid_argument(client, tolerance):
    with pytest.raises(SolverError) as caught:
        client.solve_checked(NAME, {"a": fields(1, 64)[0]}, tolerance=tolerance)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "(0, 1]" in str(caught.value)


def test_refinement_above_the_size_limit_is_resource_exhausted(client):
    with pytest.raises(SolverError) as caught:
        client.solve_checked(NAME, {"a": np.full((520, 520), 5.0, np.float32)}, tolerance=1e-3)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "270400 grid points" in str(caught.value) and "262144 per sample" in str(caught.value)


@pytest.mark.parametrize(("side", "validated"), [(63, True), (95, True), (127, False), (33, False)])
def test_grid_validated_says_whether_the_side_is_in_the_validated_range(client, side, validated):
    assert client.solve_checked(NAME, {"a": fields(1, side)[0]}).grid_validated is validated


def test_inputs_outside_the_training_range_are_named(client):
    a = fields(2, 64)
    a[1, 10, 10] = 20.0  # the training coefficients lie in [3, 12]
    answer = client.solve_checked(NAME, {"a": a})
    assert answer.out_of_range_inputs == ["a"] and len(answer.checks) == 2


def test_get_model_lists_the_validated_sides_their_errors_and_the_coverage(client):
    info = client.get_model(NAME)
    assert [(s.side, s.relative_l2, s.n_samples) for s in info.side_errors] == [
        (s.side, s.relative_l2, s.n_samples) for s in VALIDATION.sides
    ]
    assert (info.validated_min_side, info.validated_max_side, info.validation_max_factor) == (48, 96, 2.0)
    assert (info.estimate_coverage, info.error_indicator, info.calibration_samples) == (0.9, "darcy", 40)
    assert [(r.name, r.low, r.high) for r in info.input_ranges] == [("a", 3.0, 12.0)]
    bundled = next(m for m in client.list_models() if m.name == NAME)
    assert bundled.validated_max_side == 96


def test_model_infer_takes_the_tolerance_as_a_parameter_and_returns_the_checks(checked):
    a = fields(2, 64, seed=9)
    with triton.InferenceServerClient(checked[0]) as oip:
        tensor = triton.InferInput("a", list(a.shape), "FP32")
        tensor.set_data_from_numpy(a)
        headers = {"application": APP}
        plain = oip.infer(NAME, [tensor], headers=headers)
        refined = oip.infer(NAME, [tensor], headers=headers, parameters={"tolerance": 1e-6})
        with pytest.raises(triton.InferenceServerException) as caught:
            oip.infer(NAME, [tensor], headers=headers, parameters={"tolerance": 2.0})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    indicator = plain.as_numpy("indicator")
    assert indicator.shape == (2,) and (indicator > 0).all()
    np.testing.assert_allclose(plain.as_numpy("estimated_relative_l2"), CALIBRATION.scale * indicator)
    assert np.isnan(plain.as_numpy("residual")).all()
    assert [p.decode() for p in plain.as_numpy("answer_path")] == ["surrogate", "surrogate"]
    parameters = plain.get_response().parameters
    assert parameters["estimate_coverage"].double_param == pytest.approx(0.9)
    assert parameters["grid_validated"].bool_param is True
    assert [p.decode() for p in refined.as_numpy("answer_path")] == ["refined", "refined"]
    assert (refined.as_numpy("residual") <= 1e-6).all() and refined.as_numpy("u").dtype == np.float64
    for i in range(2):
        assert relative_residual(a[i], refined.as_numpy("u")[i]) <= 1e-6
