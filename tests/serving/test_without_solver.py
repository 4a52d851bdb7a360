"""Models served without their classical solver, through the session's real Ray Serve gRPC proxy: one
whose PDE family comes from a plugin distribution that is not installed, and one trained on imported
data (no solver at all) whose solver-free estimate ``pdeserve models validate`` calibrated on the
held-out split of its training data. Both answer Solve; what needs the solver is FAILED_PRECONDITION
saying what is missing; the solver-free estimate covers fresh samples at its stated rate and flags
inputs outside the training data."""

import shutil

import grpc
import h5py
import numpy as np
import pytest

from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.dataset import GenerationRequest, load_dataset, write_dataset
from pdeserve.datagen.families import get_family
from pdeserve.operators.card import (
    ErrorCalibration,
    FamilySource,
    FieldSpec,
)
from pdeserve.operators.repository import ModelRepository, read_card, write_card
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.server import APP_NAME

BUNDLED = "darcy-fno"
MISSING, IMPORTED = "plugin-missing", "imported-darcy"
APP = "without-solver"
SIDE, N_TRAIN, N_HELD, N_FRESH = 32, 200, 800, 400
# PDEBench's Darcy variables keep their names: the coefficient `nu` and the solution `tensor`.
COEFFICIENT, SOLUTION = "nu", "tensor"
pytestmark = pytest.mark.ray


def _publish(repo: ModelRepository, name: str, source, card) -> None:
    def write(folder):
        shutil.copy(source / card.weights.file, folder / card.weights.file)
        write_card(folder, card)

    repo.publish(name, write)


def _darcy(path, n: int, seed: int):
    request = GenerationRequest(get_family("darcy"), DarcyParameters(), n, SIDE, seed=seed)
    return write_dataset(request, path, progress=False)


@pytest.fixture(scope="module")
def served(serve_apps, bundled_repo, tmp_path_factory):
    """``(target, repository)``: an application serving the bundled weights as (a) a model of a plugin
    family that is not installed, and (b) a model trained on imported data, validated with
    ``pdeserve models validate`` (its solver-free estimate calibrated on its lineage's held-out split)."""
    from pdeserve.cli.entry_points import main

    root = tmp_path_factory.mktemp("without-solver")
    repo = ModelRepository(root / "models")
    source = bundled_repo / BUNDLED / "1"
    bundled = read_card(source)
    _publish(
        repo,
        MISSING,
        source,
        bundled.replace(
            pde="not-installed-family",
            family=FamilySource("pdeserve-not-installed", "9.9"),
            calibration=ErrorCalibration("not-installed-indicator", 0.9, 1.5, 40),
        ),
    )
    # Imported data: Darcy solutions written in PDEBench's layout (coefficient `nu`, solution `tensor`
    # (N, 1, X, Y), coordinates, attribute `beta`), imported and trained on as a user would.
    solved = load_dataset(_darcy(root / "solved.h5", N_TRAIN + N_HELD, seed=21))
    source = root / "2D_DarcyFlow_beta1.0_Train.hdf5"
    with h5py.File(source, "w") as handle:
        handle["nu"] = solved.inputs["a"]
        handle["tensor"] = solved.outputs["u"][:, None]
        handle["x-coordinate"] = handle["y-coordinate"] = np.linspace(0, 1, SIDE, dtype=np.float32)
        handle.attrs["beta"] = 1.0
    imported = root / "data" / "pdebench-darcy.h5"
    imports = [
        "datagen",
        "import",
        "pdebench",
        str(source),
        "--out",
        str(imported),
        "--name",
        "pdebench-darcy",
    ]
    assert main([*imports, "--quiet"]) == 0
    train = ["train", "--data", str(imported), "--model", "fno", "--repo", str(repo.root), "--name", IMPORTED]
    small = ["--arg", "n_modes=[8,8]", "--arg", "hidden_channels=16", "--epochs", "15", "--lr", "5e-3"]
    assert main([*train, *small, "--test-fraction", str(N_HELD / (N_TRAIN + N_HELD)), "--quiet"]) == 0
    assert main(["models", "validate", IMPORTED, "--repo", str(repo.root)]) == 0
    yield serve_apps.deploy(APP, repo.root), repo
    serve_apps.delete(APP)


@pytest.fixture(scope="module")
def client(served):
    with SolverClient(served[0], timeout=60, application=APP) as c:
        yield c


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Fresh held-out samples of the imported model's distribution (a seed its data did not use)."""
    return load_dataset(_darcy(tmp_path_factory.mktemp("fresh") / "fresh.h5", N_FRESH, seed=99))


def _solver_refusals(client: SolverClient, name: str, a: np.ndarray, field: str = "a") -> list[str]:
    """The messages of a reference and of a tolerance asked of ``name``, each FAILED_PRECONDITION."""
    messages = []
    for request in (
        lambda: client.solve_response(name, {field: a}, reference=True),
        lambda: client.solve_checked(name, {field: a}, tolerance=1e-3),
    ):
        with pytest.raises(SolverError) as caught:
            request()
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        messages.append(str(caught.value))
    return messages


def test_a_model_of_a_missing_plugin_answers_and_refuses_what_needs_its_solver(client, fresh):
    a = fresh.inputs["a"][:2]
    answer = client.solve_checked(MISSING, {"a": a})
    assert answer.outputs["u"].shape == (2, SIDE, SIDE) and np.isfinite(answer.outputs["u"]).all()
    # Its card's calibration scales the family's indicator, which needs the solver: no estimate.
    for check in answer.checks:
        assert check.path == "surrogate" and check.estimated_relative_l2 is None and check.indicator is None
        assert check.coverage == 0 and check.estimate_method == ""
    for message in _solver_refusals(client, MISSING, a):
        assert "'pdeserve-not-installed' (version 9.9), which is not installed here" in message
    info = client.get_model(MISSING)
    assert not info.has_solver and "'pdeserve-not-installed' (version 9.9)" in info.solver_unavailable_reason
    assert not info.HasField("solver_free_estimate")
    # The server keeps serving, this model and the others.
    assert client.solve(MISSING, {"a": a[0]})["u"].shape == (SIDE, SIDE)


def test_the_other_models_keep_their_solver(grpc_target):
    with SolverClient(grpc_target, timeout=60, application=APP_NAME) as main:
        info = main.get_model(BUNDLED)
    assert info.solver_unavailable_reason == "" and info.has_solver


def test_a_model_trained_on_imported_data_has_no_solver(client, fresh):
    info = client.get_model(IMPORTED)
    assert not info.has_solver and "imported data (pdebench)" in info.solver_unavailable_reason
    a = fresh.inputs["a"][:1]
    for message in _solver_refusals(client, IMPORTED, a, COEFFICIENT):
        assert "imported data (pdebench) and has no classical solver" in message


def test_the_solver_free_estimate_covers_fresh_samples_at_its_stated_rate(client, served, fresh):
    card = served[1].card(IMPORTED)[1]
    free = card.solver_free
    assert free is not None and card.calibration is None
    assert free.n_samples == N_HELD // 2 and free.n_test == N_HELD // 2
    assert abs(free.measured_coverage - free.coverage) <= 0.05
    info = client.get_model(IMPORTED).solver_free_estimate
    assert info.coverage == pytest.approx(0.9) and info.measured_coverage == pytest.approx(
        free.measured_coverage
    )
    assert info.test_samples == free.n_test and info.calibration_samples == free.n_samples

    answer = client.solve_checked(IMPORTED, {COEFFICIENT: fresh.inputs["a"]})
    u, truth = answer.outputs[SOLUTION], fresh.outputs["u"]
    errors = np.linalg.norm((u - truth).reshape(N_FRESH, -1), axis=1) / np.linalg.norm(
        truth.reshape(N_FRESH, -1), axis=1
    )
    estimated = np.array([c.estimated_relative_l2 for c in answer.checks])
    assert all(c.estimate_method == "solver-free" and c.coverage == pytest.approx(0.9) for c in answer.checks)
    assert np.all(estimated > 0)
    covered = float(np.mean(errors <= estimated))
    assert abs(covered - 0.9) <= 0.05, (covered, free.measured_coverage)
    # In-distribution inputs are rarely flagged (the flags sit at the training data's 99th percentile).
    assert sum(bool(c.out_of_distribution) for c in answer.checks) <= 0.1 * N_FRESH


def test_inputs_outside_the_training_data_are_flagged(client, fresh):
    a = fresh.inputs["a"][0]
    noise = np.where(np.random.default_rng(0).standard_normal(a.shape) >= 0, 12.0, 3.0)
    answer = client.solve_checked(IMPORTED, {COEFFICIENT: np.stack([a, 10.0 * a, noise]).astype(np.float32)})
    inside, scaled, white = (c.out_of_distribution for c in answer.checks)
    assert inside == ()
    assert any(r.startswith(f"{COEFFICIENT}: values outside its training range [3, 12]") for r in scaled)
    assert any("of its energy at wavenumbers" in r for r in white)
    assert any("from the training inputs" in r for r in white + scaled)
    assert answer.out_of_range_inputs == [COEFFICIENT]
    # Far from the training inputs, the estimate grows.
    assert answer.checks[1].estimated_relative_l2 > 10 * answer.checks[0].estimated_relative_l2


def test_a_rollout_without_its_family_takes_its_times_from_the_channel_names(bundled_repo):
    from pdeserve.operators.pairs import rollout_times
    from pdeserve.serving.family import rollout_axis

    _, card = ModelRepository(bundled_repo).card("ns-fno")
    missing = card.replace(pde="not-installed-family", family=FamilySource("pdeserve-not-installed", "9.9"))
    assert rollout_axis(missing) == rollout_times(card)
    one_state = missing.replace(inputs=missing.inputs[:1], outputs=(FieldSpec("w", "w at t = 1"),))
    assert rollout_axis(one_state).interval is None and rollout_axis(one_state).field == "w"
