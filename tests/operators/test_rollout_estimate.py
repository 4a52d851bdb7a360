"""The error estimate along a rollout: each pass is compared with the classical solution from the exact
start (the error earlier passes fed forward included), calibrated on fresh trajectories up to a horizon."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pdeserve.operators import estimates, load_model, validation
from pdeserve.operators.card import ErrorCalibration
from pdeserve.operators.evaluation import relative_l2

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def ns_fno():
    return load_model(MODELS, "ns-fno")


@pytest.fixture(scope="module")
def trajectories(ns_fno):
    """Ten fresh exact trajectories of the bundled model's distribution, four passes long."""
    pairs = validation.rollout_samples(ns_fno, n_samples=10, steps=4, seed=11)
    assert pairs.x.shape == (10, 10, 64, 64) and pairs.y.shape == (10, 4, 64, 64)
    return pairs


def _window(card, x):
    return dict(zip(card.input_names, x, strict=True))


def test_trajectories_continue_the_training_data_one_time_unit_per_pass(ns_fno, trajectories):
    # The first pass's states are the one-step pairs of the same seeds: the horizon only extends them.
    one_step = validation.fresh_samples(
        *_family_and_params(ns_fno), side=64, n_samples=2, seed=11
    )  # the card's own horizon, t = 0..10
    states = np.concatenate([one_step.inputs["w0"][:, None], one_step.outputs["w"]], axis=1)
    np.testing.assert_allclose(trajectories.x[:2], states[:, :10], rtol=0, atol=1e-5)
    np.testing.assert_allclose(trajectories.y[:2, 0], states[:, 10], rtol=0, atol=1e-5)


def _family_and_params(surrogate):
    from pdeserve.datagen.families import get_family

    family = get_family(surrogate.card.pde)
    params = family.parameters_from(surrogate.card.pde_parameters)
    return family, validation._parameters_at(family, params, 64, 64)


def test_the_rollout_indicator_measures_the_accumulated_error_not_the_last_pass_alone(ns_fno, trajectories):
    card = ns_fno.card
    x, y = trajectories.x[0].astype(np.float64), trajectories.y[0].astype(np.float64)
    grid = np.linspace(0.0, 1.0, 64, endpoint=False)
    shape = np.sin(2 * np.pi * grid)[:, None] * np.cos(4 * np.pi * grid)[None, :]
    check = estimates.start_rollout(card, _window(card, x))
    window = list(x)
    for p in range(4):
        # Each pass adds 1% of the state's norm in one smooth direction: after p + 1 passes the state is
        # (p + 1)% off the truth, while a pass reading the earlier (already wrong) states adds 1% (which
        # the flow then moves: 2.3% at the fourth pass, against 4% accumulated).
        proposed = y[p] + 0.01 * (p + 1) * np.linalg.norm(y[p]) * shape / np.linalg.norm(shape)
        estimate, check = estimates.rollout_estimate(card, check, {"w@t=10": proposed})
        assert check.passes == p + 1
        assert estimate.indicator == pytest.approx(0.01 * (p + 1), abs=1e-3)
        one_pass = estimates.indicator(card, _window(card, window[-10:]), {"w@t=10": proposed})
        if p == 3:
            assert one_pass < 0.025 < 0.035 < estimate.indicator  # what a one-step check would miss
        window.append(proposed)


def test_estimates_are_calibrated_up_to_the_horizon_and_absent_beyond(ns_fno, trajectories):
    card = ns_fno.card.replace(
        calibration=ErrorCalibration("two-solution", 0.9, 2.0, 50),
        rollout_calibration=ErrorCalibration("two-solution", 0.8, 3.0, 20, steps=2),
    )
    x = trajectories.x[0]
    check = estimates.start_rollout(card, _window(card, x))
    predicted = {"w@t=10": ns_fno.forward(x[None])[0, 0]}
    got = []
    for _ in range(3):
        estimate, check = estimates.rollout_estimate(card, check, predicted)
        got.append((estimate.relative_l2 and estimate.relative_l2 / estimate.indicator, estimate.coverage))
    assert got[0] == (pytest.approx(2.0), 0.9)  # the first pass reads exact states: the one-step calibration
    assert got[1] == (pytest.approx(3.0), 0.8)
    assert got[2] == (None, None)  # beyond the calibrated horizon: the indicator alone
    without = dataclasses.replace(card, rollout_calibration=None)
    check = estimates.start_rollout(without, _window(card, x))
    _, check = estimates.rollout_estimate(without, check, {"w@t=10": x[-1]})
    assert estimates.rollout_estimate(without, check, {"w@t=10": x[-1]})[0].relative_l2 is None


def test_rollout_calibration_covers_every_pass_of_fresh_trajectories(ns_fno, trajectories):
    calibration = validation.calibrate_rollout(ns_fno, trajectories.x, trajectories.y, coverage=0.9)
    assert (calibration.indicator, calibration.steps, calibration.n_samples) == ("two-solution", 4, 10)
    # The coarse classical trajectory is far more accurate than the model: the indicator is the error.
    assert 0.95 < calibration.scale < 1.1
    card = ns_fno.card.replace(rollout_calibration=calibration)
    fresh = validation.rollout_samples(ns_fno, n_samples=10, steps=4, seed=12)
    checks = [estimates.start_rollout(card, _window(card, x)) for x in fresh.x]
    window, errors, estimated = fresh.x, [], []
    for p in range(4):
        predicted = ns_fno.forward(window)
        for i, check in enumerate(checks):
            estimate, checks[i] = estimates.rollout_estimate(card, check, {"w@t=10": predicted[i, 0]})
            errors.append(relative_l2(predicted[i : i + 1], fresh.y[i : i + 1, p : p + 1]))
            estimated.append(estimate.relative_l2)
        window = np.concatenate([window, predicted], axis=1)[:, -10:]
    errors, estimated = np.array(errors).reshape(4, 10), np.array(estimated).reshape(4, 10)
    assert errors[3].mean() > 2 * errors[0].mean()  # errors grow along the rollout ...
    assert np.mean(errors <= estimated * 1.001) >= 0.9  # ... and the estimates grow with them
    np.testing.assert_allclose(estimated, errors * calibration.scale, rtol=0.05)


def test_publish_validated_calibrates_the_rollout_of_a_time_mapped_model(ns_fno, tmp_path):
    import shutil

    shutil.copytree(MODELS / "ns-fno" / "1", tmp_path / "ns-fno" / "1")
    version, card = validation.publish_validated(
        tmp_path,
        "ns-fno",
        None,
        n_samples=9,
        sweep_samples=1,
        seed=0,
        rollout_samples_count=9,
        rollout_steps=2,
    )
    assert version == "2"
    assert card.rollout_calibration.steps == 2 and card.rollout_calibration.n_samples == 9
    assert load_model(tmp_path, "ns-fno").card.rollout_calibration == card.rollout_calibration


def test_trajectories_use_a_time_step_stable_over_the_whole_horizon(ns_fno, monkeypatch):
    seen = []
    real = validation.fresh_samples
    monkeypatch.setattr(
        validation,
        "fresh_samples",
        lambda family, params, *a: seen.append(params) or real(family, params, *a),
    )
    validation.rollout_samples(ns_fno, n_samples=1, steps=40, seed=0)
    (params,) = seen
    assert params.final_time == 49.0 and params.record_every == 1.0
    # The card's 0.0033 is stable to t = 10 only; the family's own check refuses it to t = 49.
    assert ns_fno.card.pde_parameters["time_step"] == 0.0033 and params.time_step < 0.0033
    params.for_resolution(64)  # raises for a step it refuses


def test_bad_calibration_settings_are_refused_before_any_sampling(tmp_path, monkeypatch):
    import shutil

    shutil.copytree(MODELS / "ns-fno" / "1", tmp_path / "ns-fno" / "1")
    monkeypatch.setattr(validation, "validation_samples", lambda *a: pytest.fail("sampled"))
    monkeypatch.setattr(validation, "fresh_samples", lambda *a: pytest.fail("sampled"))
    with pytest.raises(ValueError, match="at least 1 forward pass, got 0"):
        validation.publish_validated(tmp_path, "ns-fno", None, 9, 1, 0, rollout_steps=0)
    with pytest.raises(ValueError, match=r"5 rollout trajectories cannot calibrate a coverage of 0\.9"):
        validation.publish_validated(tmp_path, "ns-fno", None, 9, 1, 0, rollout_samples_count=5)
    with pytest.raises(ValueError, match="3 samples cannot calibrate"):
        validation.publish_validated(tmp_path, "ns-fno", None, 3, 1, 0)


def test_without_the_one_step_calibration_no_pass_carries_an_estimate(ns_fno, trajectories):
    card = ns_fno.card.replace(
        calibration=None, rollout_calibration=ErrorCalibration("two-solution", 0.9, 1.0, 20, steps=40)
    )
    check = estimates.start_rollout(card, _window(card, trajectories.x[0]))
    for _ in range(2):
        estimate, check = estimates.rollout_estimate(card, check, {"w@t=10": trajectories.y[0, 0]})
        assert estimate.relative_l2 is None and estimate.indicator >= 0


def test_cards_without_a_rollout_calibration_keep_the_json_older_readers_read(ns_fno):
    import json

    from pdeserve.operators.card import ModelCard

    plain = ns_fno.card.replace(
        calibration=ErrorCalibration("two-solution", 0.9, 1.0, 20), rollout_calibration=None
    )
    document = json.loads(plain.to_json())
    assert "rollout_calibration" not in document and "steps" not in document["calibration"]
    assert ModelCard.from_json(plain.to_json()) == plain
    rolled = plain.replace(rollout_calibration=ErrorCalibration("two-solution", 0.9, 1.0, 20, steps=40))
    assert json.loads(rolled.to_json())["rollout_calibration"]["steps"] == 40
    assert ModelCard.from_json(rolled.to_json()) == rolled


def test_a_classical_fallback_catches_up_from_the_exact_start_then_continues(ns_fno, trajectories):
    card = ns_fno.card
    x, y = trajectories.x[0], trajectories.y[0]
    check = estimates.start_rollout(card, _window(card, x))
    for _ in range(2):  # two passes of a (badly) wrong rollout
        _, check = estimates.rollout_estimate(card, check, {"w@t=10": np.zeros_like(x[0])})
    for p in (2, 3):
        states, check = estimates.classical_pass(card, check)
        truth = y[p]
        assert np.linalg.norm(states["w@t=10"] - truth) < 1e-4 * np.linalg.norm(truth)
        _, check = estimates.rollout_estimate(card, check, states)
        assert check.passes == p + 1
