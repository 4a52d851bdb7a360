"""The solver-free error estimate: its features do not depend on the grid, its split-conformal scale
covers held-out samples at the stated rate, its statistics file is checked, and the card keeps it
readable by readers that predate it."""

import dataclasses
import json

import numpy as np
import pytest

from pdeserve.operators import solver_free_estimate as free
from pdeserve.operators.card import (
    ChannelStats,
    DatasetSummary,
    FamilySource,
    FieldSpec,
    ModelCard,
    Normalizers,
)
from pdeserve.operators.errors import CheckpointError
from pdeserve.operators.settings import TrainingSettings


def _card(side: int = 32) -> ModelCard:
    return ModelCard(
        architecture="fno",
        arguments={},
        pde="imported",
        pde_parameters={},
        dims=("x", "y"),
        inputs=(FieldSpec("a", "coefficient"),),
        outputs=(FieldSpec("u", "solution"),),
        training_resolution=(side, side),
        normalizers=Normalizers(ChannelStats((1.0,), (2.0,)), ChannelStats((0.0,), (1.0,))),
        dataset=DatasetSummary("f" * 64, 10, 8, 2),
        training=TrainingSettings(),
        pdeserve_version="0",
        created_at="2026-01-01T00:00:00+00:00",
        family=FamilySource(None, None, "pdebench"),
    )


def _smooth_fields(n: int, side: int, seed: int) -> np.ndarray:
    """``(n, 1, side, side)`` smooth random fields (a few low modes), sampled at the nodes of [0, 1]^2."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, side)
    fields = []
    for _ in range(n):
        c = rng.standard_normal((3, 3))
        fields.append(
            sum(
                c[i, j] * np.outer(np.cos(np.pi * i * x), np.cos(np.pi * j * x))
                for i in range(3)
                for j in range(3)
            )
        )
    return np.stack(fields)[:, None]


def test_features_of_one_field_agree_across_grid_sides():
    card = _card()
    side = free.coarse_side(card)
    coarse, fine = (
        free.features(card, side, f) for f in (_smooth_fields(4, 33, 1), _smooth_fields(4, 129, 1))
    )
    assert coarse.shape == fine.shape == (4, 256)
    assert np.abs(coarse - fine).max() < 0.02 * np.abs(fine).max()


def test_the_calibrated_scale_covers_held_out_samples_at_the_stated_rate():
    card = _card()
    x_train, x_held = _smooth_fields(200, 32, 2), _smooth_fields(400, 32, 3)
    # An error that grows with the distance from the training inputs, with noise.
    distance = free.fit_statistics(card, x_train).distances(free.features(card, 16, x_held), free.NEIGHBOURS)
    errors = 0.01 * distance * np.random.default_rng(4).lognormal(0.0, 0.3, len(x_held))
    calibrated = free.calibrate(card, x_train, x_held, errors, 0.9)
    result = calibrated.calibration
    assert result.n_samples == result.n_test == 200 and result.coverage == 0.9
    assert abs(result.measured_coverage - 0.9) <= 0.05
    estimates = result.scale * (distance[200:] + result.floor)
    assert result.measured_coverage == pytest.approx(np.mean(errors[200:] <= estimates))
    assert result.band == (8, 16) and len(result.band_limits) == 1


def test_inputs_outside_the_training_data_are_flagged(tmp_path):
    card = _card()
    x_train, x_held = _smooth_fields(100, 32, 5), _smooth_fields(40, 32, 6)
    calibrated = free.calibrate(card, x_train, x_held, np.full(40, 0.01), 0.9)
    record = calibrated.statistics.save(tmp_path)
    card = card.replace(solver_free=dataclasses.replace(calibrated.calibration, statistics=record))
    estimator = free.load_estimator(tmp_path, card)
    inside = estimator.check({"a": x_held[0, 0]})
    assert inside.reasons == () and inside.indicator > 0
    noise = np.random.default_rng(7).standard_normal((32, 32))
    assert any("of its energy at wavenumbers 8-16" in r for r in estimator.check({"a": noise}).reasons)
    far = estimator.check({"a": 30.0 * x_held[0, 0]})
    assert any("from the training inputs" in r for r in far.reasons) and far.indicator > 5 * inside.indicator


def test_a_changed_statistics_file_is_refused(tmp_path):
    card = _card()
    calibrated = free.calibrate(
        card, _smooth_fields(50, 32, 8), _smooth_fields(30, 32, 9), np.full(30, 0.01), 0.9
    )
    record = calibrated.statistics.save(tmp_path)
    loaded = free.InputStatistics.load(tmp_path, record)
    assert loaded.basis.shape == (free.COMPONENTS, 256) and loaded.projections.shape == (50, free.COMPONENTS)
    path = tmp_path / record.file
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        free.InputStatistics.load(tmp_path, record)


def test_cards_without_it_omit_it_and_cards_with_it_read_back(tmp_path):
    card = _card()
    assert "solver_free" not in json.loads(card.to_json())
    calibrated = free.calibrate(
        card, _smooth_fields(50, 32, 10), _smooth_fields(30, 32, 11), np.full(30, 0.01), 0.9
    )
    with_it = card.replace(solver_free=calibrated.calibration)
    assert ModelCard.from_json(with_it.to_json()).solver_free == calibrated.calibration
