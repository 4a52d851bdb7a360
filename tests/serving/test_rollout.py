"""Server-streaming Rollout of time-dependent models: tiny Navier-Stokes models trained here, served as a
second application on the session's Ray instance, streamed and compared with in-process autoregression;
a stream's work is bounded, follows a slow reader and stops when its client goes away."""

import shutil
import time

import grpc
import numpy as np
import pytest
from ray import serve
from test_serving_features import METRICS_EXPORT_S, _poll, _scrape, _total

from pdeserve.cli import main
from pdeserve.datagen.dataset import load_dataset
from pdeserve.operators import estimates, load_model
from pdeserve.operators.validation import publish_validated
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.protos.v1 import solver_pb2_grpc
from pdeserve.serving.app import MAX_ROLLOUT_POINTS, MAX_ROLLOUT_STEPS
from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.server import APP_NAME
from pdeserve.serving.tensors import to_tensor

APP = "rollout"
RECORD_EVERY = 0.5
STREAMED = "ns-streamed"
CHECKED = "ns-checked"
CHECKED_1_TO_2 = "ns-checked-1-to-2"
pytestmark = pytest.mark.ray


def pdeserve(*args: str) -> None:
    """``pdeserve ARGS`` in this process (the fixture's data and models; no interpreter to start)."""
    assert main(list(args)) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset and a repository with two small next-state models: 1 state -> 1, and 2 states -> 2."""
    root = tmp_path_factory.mktemp("rollout")
    data, repo = root / "ns.h5", root / "repo"
    pdeserve(
        "datagen", "navier-stokes", "--n", "12", "--resolution", "32", "--final-time", "3", "--seed", "3",
        "--record-every", str(RECORD_EVERY), "--time-step", "0.005", "--out", str(data), "--quiet",
    )  # fmt: skip
    for name, steps in (("ns-1", "1"), ("ns-2", "2")):
        pdeserve(
            "train", "--data", str(data), "--model", "fno", "--repo", str(repo), "--name", name,
            "--input-steps", steps, "--output-steps", steps, "--epochs", "2", "--device", "cpu",
            "--arg", "hidden_channels=8", "--arg", "n_modes=[6,6]", "--quiet",
        )  # fmt: skip
    shutil.copytree(repo / "ns-1", repo / STREAMED)  # its counters count the stream test's steps only
    # ns-1 validated: its estimates calibrated for one pass, and on fresh trajectories for three; and a
    # validated model that predicts two states from one.
    shutil.copytree(repo / "ns-1", repo / CHECKED)
    publish_validated(repo, CHECKED, None, 9, 1, seed=0, rollout_samples_count=9, rollout_steps=3)
    pdeserve(
        "train", "--data", str(data), "--model", "fno", "--repo", str(repo), "--name", CHECKED_1_TO_2,
        "--input-steps", "1", "--output-steps", "2", "--epochs", "2", "--device", "cpu",
        "--arg", "hidden_channels=8", "--arg", "n_modes=[6,6]", "--quiet",
    )  # fmt: skip
    publish_validated(repo, CHECKED_1_TO_2, None, 9, 1, seed=0, rollout_samples_count=9, rollout_steps=2)
    return load_dataset(data), repo


@pytest.fixture(scope="module")
def client(serve_apps, trained):
    target = serve_apps.deploy(APP, trained[1])
    with SolverClient(target, timeout=60, application=APP) as c:
        yield c
    # Not waiting: a deleted direct-ingress replica stays up for Serve's draining period.
    serve.delete(APP, _blocking=False)


def autoregress(model, states: list[np.ndarray], steps: int) -> list[np.ndarray]:
    """In-process reference: ``model.predict`` on the newest input_steps states, its predictions appended."""
    k = len(model.input_names)
    while len(states) < k + steps:
        predicted = model.predict(dict(zip(model.input_names, states[-k:], strict=True)))
        states = states + [predicted[name] for name in model.output_names]
    return states[k : k + steps]


@pytest.mark.parametrize(("name", "steps"), [("ns-1", 4), ("ns-2", 5)])
def test_rollout_streams_each_step_equal_to_in_process_autoregression(client, trained, name, steps):
    data, repo = trained
    model = load_model(repo, name)
    trajectory = np.concatenate([data.inputs["w0"][:, None], data.outputs["w"]], axis=1)[:2]  # (2, t, x, y)
    k = len(model.input_names)
    initial = dict(zip(model.input_names, (trajectory[:, i] for i in range(k)), strict=True))
    expected = autoregress(model, [trajectory[:, i] for i in range(k)], steps)

    streamed = list(client.rollout(name, initial, steps))
    assert [s.step for s in streamed] == list(range(steps))
    # Times count the first input state as t = 0: the first prediction is the state after the k inputs.
    np.testing.assert_allclose([s.time for s in streamed], RECORD_EVERY * np.arange(k, k + steps), atol=1e-12)
    for got, want in zip(streamed, expected, strict=True):
        assert list(got.outputs) == ["w"] and got.outputs["w"].shape == (2, 32, 32)
        np.testing.assert_allclose(got.outputs["w"], want, atol=1e-5, rtol=0)
        # Each sample's state comes with the estimate of the forward pass that predicted it.
        assert [c.path for c in got.checks] == ["surrogate", "surrogate"]
        assert all(c.indicator > 0 and c.estimated_relative_l2 is None for c in got.checks)

    # One sample without a batch axis streams states without one.
    single = [s.outputs["w"] for s in client.rollout(name, {n: v[0] for n, v in initial.items()}, 2)]
    assert [s.shape for s in single] == [(32, 32), (32, 32)]
    np.testing.assert_allclose(single, [e[0] for e in expected[:2]], atol=1e-5, rtol=0)


def test_each_step_estimates_the_error_accumulated_since_the_exact_start(client, trained):
    data, repo = trained
    model = load_model(repo, CHECKED)
    card = model.card
    assert (card.calibration.steps, card.rollout_calibration.steps) == (1, 3)
    assert client.get_model(CHECKED).rollout_calibrated_passes == 3
    w0 = data.inputs["w0"][:2]
    streamed = list(client.rollout(CHECKED, {"w0": w0}, 5))
    # In process: the classical coarse solution from each exact w0, carried along the streamed states.
    (w_in,), (w_out,) = card.input_names, card.output_names
    expected = []
    rollouts = [estimates.start_rollout(card, {w_in: w}) for w in w0]
    for state in streamed:
        step = [
            estimates.rollout_estimate(card, r, {w_out: w})
            for r, w in zip(rollouts, state.outputs["w"], strict=True)
        ]
        rollouts = [after for _, after in step]
        expected.append([estimate for estimate, _ in step])
    for p, (state, estimated) in enumerate(zip(streamed, expected, strict=True)):
        got = [c.indicator for c in state.checks]
        np.testing.assert_allclose(got, [e.indicator for e in estimated], rtol=1e-6)
        calibration = card.calibration if p == 0 else card.rollout_calibration
        if p < 3:
            np.testing.assert_allclose(
                [c.estimated_relative_l2 for c in state.checks], calibration.scale * np.array(got), rtol=1e-6
            )
            assert [c.coverage for c in state.checks] == [pytest.approx(0.9)] * 2
        else:  # beyond the calibrated horizon: the indicator alone
            assert [c.estimated_relative_l2 for c in state.checks] == [None, None]
    # A check of the last pass alone, from the streamed state it read, is another number.
    alone = estimates.indicator(
        card, {w_in: streamed[-2].outputs["w"][0]}, {w_out: streamed[-1].outputs["w"][0]}
    )
    assert abs(streamed[-1].checks[0].indicator - alone) > 0.05 * alone


def test_a_rollout_held_to_an_estimated_error_continues_with_the_classical_solver(
    client, trained, grpc_target
):
    data, _ = trained
    w0, truth = data.inputs["w0"][:2], data.outputs["w"][:2]  # the dataset's own solution, t = 0.5, 1, ...
    # A model that predicts two states per pass, every sample fallen back from the first pass on.
    for p, state in enumerate(client.rollout(CHECKED_1_TO_2, {"w0": w0}, 4, max_estimated_error=1e-9)):
        assert [c.path for c in state.checks] == ["classical", "classical"]
        np.testing.assert_allclose(state.outputs["w"], truth[:, p], rtol=0, atol=1e-4)
    plain = list(client.rollout(CHECKED, {"w0": w0}, 3))
    # A limit no surrogate state meets: every state is the classical solver's, from w0.
    strict = list(client.rollout(CHECKED, {"w0": w0}, 4, max_estimated_error=1e-9))
    for p, state in enumerate(strict):
        assert [c.path for c in state.checks] == ["classical", "classical"]
        np.testing.assert_allclose(state.outputs["w"], truth[:, p], rtol=0, atol=1e-4)
        # Checked as the surrogate's states are (against the coarse solve, up to the calibrated horizon),
        # the classical states' estimates are below the surrogate's.
        estimated = [c.estimated_relative_l2 for c in state.checks]
        if p < 3:
            assert all(
                e < 0.5 * c.estimated_relative_l2 for e, c in zip(estimated, plain[p].checks, strict=True)
            )
        else:
            assert estimated == [None, None]
    # A limit every calibrated estimate meets: the surrogate's states for the three calibrated passes,
    # then the classical solver's (no estimate to hold them to), caught up from w0.
    loose = list(client.rollout(CHECKED, {"w0": w0}, 5, max_estimated_error=100.0))
    assert [[c.path for c in s.checks] for s in loose] == [["surrogate"] * 2] * 3 + [["classical"] * 2] * 2
    np.testing.assert_allclose(loose[3].outputs["w"], truth[:, 3], rtol=0, atol=1e-4)
    np.testing.assert_allclose(loose[4].outputs["w"], truth[:, 4], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(plain[2].outputs["w"], loose[2].outputs["w"])

    def status(model: str, limit: float) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(SolverError) as caught:
            list(client.rollout(model, {"w0": w0}, 2, max_estimated_error=limit))
        return caught.value.code, str(caught.value)

    assert status(CHECKED, -0.1)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert status(CHECKED, float("nan"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, message = status("ns-1", 0.1)  # not calibrated: nothing to hold its states to
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "models validate" in message
    with pytest.raises(SolverError) as caught:  # a fallback's classical work is bounded as a refinement's
        list(client.rollout(CHECKED, {"w0": np.zeros((520, 520), np.float32)}, 1, max_estimated_error=0.1))
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "per sample" in str(caught.value)


def test_bad_rollouts_get_precise_statuses(client, trained, grpc_target):
    w0 = trained[0].inputs["w0"][0]

    def status(model: str, inputs: dict, steps: int, application: str = APP) -> tuple[grpc.StatusCode, str]:
        with (
            SolverClient(grpc_target, timeout=60, application=application) as c,
            pytest.raises(SolverError) as caught,
        ):
            list(c.rollout(model, inputs, steps))
        return caught.value.code, str(caught.value)

    assert status("ns-1", {"w0": w0}, 0)[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, message = status("ns-1", {"w0": w0}, MAX_ROLLOUT_STEPS + 1)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and f"1 to {MAX_ROLLOUT_STEPS} steps" in message
    assert status("ns-1", {"a": w0}, 3)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert status("ns-1", {"w0": np.full_like(w0, np.inf)}, 3)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert status("no-such-model", {"w0": w0}, 3)[0] == grpc.StatusCode.NOT_FOUND
    # Steps x grid points above the stream's budget: 64 samples of 32 x 32 for 1025 steps.
    code, message = status("ns-1", {"w0": np.resize(w0, (64, 32, 32))}, MAX_ROLLOUT_POINTS // 64 // 1024 + 1)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(MAX_ROLLOUT_POINTS) in message
    # A steady model (the bundled Darcy FNO, in the main application) cannot be rolled out.
    code, message = status("darcy-fno", {"a": np.ones((64, 64), np.float32)}, 3, application=APP_NAME)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not time-dependent" in message
    # The stream after the errors still works.
    assert [s.step for s in client.rollout("ns-1", {"w0": w0}, 2)] == [0, 1]


def test_solve_cli_streams_a_rollout_and_stacks_it(client, trained, grpc_target, tmp_path, capsys):
    from pdeserve.cli import main

    w0 = trained[0].inputs["w0"][:2]
    np.save(tmp_path / "w0.npy", w0)
    expected = [s.outputs["w"] for s in client.rollout("ns-1", {"w0": w0}, 3)]
    command = ["solve", "--target", grpc_target, "--application", APP, "--model", "ns-1"]
    command += ["--input", str(tmp_path / "w0.npy"), "--steps", "3", "--out", str(tmp_path / "w.npy")]
    assert main(command) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [f"step {i} t={RECORD_EVERY * (i + 1):g}: w (2, 32, 32)" for i in range(3)]
    np.testing.assert_allclose(np.load(tmp_path / "w.npy"), np.stack(expected), atol=1e-6, rtol=0)
    assert main([*command[:-2], "--reference"]) == 1
    assert "does not apply to --steps" in capsys.readouterr().err
    # Held to an estimated error no surrogate state meets: the lines say where the states came from.
    held = [*command[:6], CHECKED, *command[7:-2], "--max-error", "1e-9"]
    assert main(held) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.endswith(", 2 of 2 from the classical solver") for line in lines)
    # Without --steps, --max-error routes a single Solve: this model has no ledger to route by.
    without_steps = [a for a in held if a not in ("--steps", "3")]
    assert main(without_steps) == 1
    assert "has no ledger to route max_error by" in capsys.readouterr().err


def test_a_stream_waits_for_a_slow_reader_and_stops_when_its_client_goes_away(
    client, trained, grpc_target, metrics_port
):
    """Steps computed, read from Prometheus (each step counts its 64 samples): a client that stops reading
    holds the stream at what gRPC buffers, and a cancelled stream computes no more steps."""
    samples, steps = 64, 1000  # 256 KiB per step, within the stream's budget
    request = pb.RolloutRequest(model=STREAMED, steps=steps)
    request.inputs["w0"].CopyFrom(to_tensor(np.resize(trained[0].inputs["w0"], (samples, 32, 32))))
    stub = solver_pb2_grpc.SolverStub(client.channel)

    def computed() -> float:
        return _total(_scrape(metrics_port), "ray_pdeserve_answers_total", model=STREAMED) / samples

    def settled(least: float) -> float:
        """Steps computed once at least ``least`` show and two scrapes ``apart`` seconds apart agree (a
        replica flushes its counters every second and Ray exports them every ``METRICS_EXPORT_S``, so two
        exports fall between them); a stream that kept computing agrees only at its last step."""
        _poll(
            metrics_port, lambda s: _total(s, "ray_pdeserve_answers_total", model=STREAMED) >= least * samples
        )
        apart = 1 + 2 * METRICS_EXPORT_S + 2
        previous, deadline = computed(), time.monotonic() + 900
        while time.monotonic() < deadline:
            time.sleep(apart)
            if (now := computed()) == previous:
                return now
            previous = now
        raise AssertionError(f"the count of steps kept changing: {previous}")

    slow = stub.Rollout(request, timeout=600, metadata=[("application", APP)])
    assert [next(slow).step for _ in range(2)] == [0, 1]
    held = settled(2)
    slow.cancel()
    assert held < 100, held

    fast = stub.Rollout(request, timeout=600, metadata=[("application", APP)])
    assert [next(fast).step for _ in range(20)] == list(range(20))
    fast.cancel()
    stopped = settled(held + 20)
    assert stopped - held < 100, (held, stopped)
    print(
        f"rollout: a stalled reader held the stream at {held:.0f} steps; cancelled after 20 read, "
        f"{stopped - held:.0f} steps were computed (of {steps} asked)"
    )
