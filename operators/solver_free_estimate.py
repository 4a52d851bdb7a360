"""A solver-free error estimate: how far an input lies from the model's training inputs, calibrated on
held-out pairs of its training data. It serves models that have no classical solver (trained on
imported data) or whose PDE family is not installed, where the family's a-posteriori indicator
(``operators/estimates.py``) cannot run.

The indicator (``input-distance``) of one input: each channel normalised with the model's input
statistics and averaged onto a ``coarse_side`` grid (so any grid side the model accepts maps to the same
features), projected on the training inputs' leading principal directions; ``d`` is the mean distance
to the ``neighbours`` nearest training projections and ``r`` the norm of what the projection leaves out;
``g = sqrt(d^2 + r^2) + floor``. The estimate is ``scale * g``, where ``scale`` is the split-conformal
quantile of ``error / g`` over calibration pairs (``validation.conformal_scale``); the coverage it
reaches is then measured on other held-out pairs and recorded beside it.

An answer is also flagged out of distribution when its distance is above the calibration pairs' 99th
percentile, or when the share of an input channel's energy in the upper half of the training grid's
wavenumbers is above the training inputs' 99th percentile.

The statistics (principal directions, their mean, the training projections) are a few hundred
kilobytes at most, stored beside the weights as safetensors; computing the indicator costs a projection
and a distance to each stored training input, well under a millisecond for a 64 x 64 input.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from pdeserve.operators.card import ModelCard, SolverFreeCalibration, Weights
from pdeserve.operators.errors import CheckpointError, model_file

INDICATOR = "input-distance"
STATISTICS_FILE = "solver-free.safetensors"
# Principal directions kept, nearest training inputs averaged, and the features per input channel.
COMPONENTS, NEIGHBOURS, FEATURES_PER_CHANNEL = 16, 5, 256
# Training inputs kept as neighbours (the first ones of the training split): bounds the file and the
# per-answer cost.
MAX_REFERENCE = 2048
# Quantile of the in-distribution samples above which an input is flagged.
FLAG_QUANTILE = 0.99
# The floor, as a fraction of the training inputs' median neighbour distance.
FLOOR_FRACTION = 0.1
# Sub-samples per coarse cell of the averaging that maps a grid onto the coarse one.
_SUBSAMPLES = 8


@functools.lru_cache(maxsize=64)
def _averaging(n: int, m: int) -> np.ndarray:
    """``(m, n)``: each of ``m`` equal cells of [0, 1] as the mean of the linear interpolant of ``n``
    values at ``i / (n - 1)`` over the cell (exact enough at any ``n``, coarser or finer than ``m``)."""
    if n == 1:
        return np.ones((m, 1))
    points = (np.arange(m * _SUBSAMPLES) + 0.5) / (m * _SUBSAMPLES) * (n - 1)
    low = np.minimum(np.floor(points).astype(int), n - 2)
    weight = points - low
    matrix = np.zeros((m * _SUBSAMPLES, n))
    rows = np.arange(m * _SUBSAMPLES)
    matrix[rows, low] = 1.0 - weight
    matrix[rows, low + 1] += weight
    return matrix.reshape(m, _SUBSAMPLES, n).mean(axis=1)


def coarse_side(card: ModelCard) -> int:
    """The side of the coarse grid: ``FEATURES_PER_CHANNEL`` cells per channel, at most the training
    grid's own side."""
    per_axis = round(FEATURES_PER_CHANNEL ** (1.0 / card.ndim))
    return max(1, min(per_axis, min(card.training_resolution)))


def _normalised(card: ModelCard, x: np.ndarray) -> np.ndarray:
    """``x`` (``(sample, channel, *grid)``) in the model's normalised input units, float64."""
    stats = card.normalizers.inputs
    shape = (1, len(stats.mean)) + (1,) * card.ndim
    mean, std = np.reshape(stats.mean, shape), np.reshape(stats.std, shape)
    return (np.asarray(x, dtype=np.float64) - mean) / np.where(std > 0, std, 1.0)


def features(card: ModelCard, side: int, x: np.ndarray) -> np.ndarray:
    """``(sample, channel * side**ndim)``: every normalised channel of ``x`` averaged onto the coarse
    grid."""
    z = _normalised(card, x)
    for axis in range(2, z.ndim):
        z = np.moveaxis(np.tensordot(z, _averaging(z.shape[axis], side), axes=([axis], [1])), -1, axis)
    return z.reshape(len(z), -1)


def band(card: ModelCard) -> tuple[int, int]:
    """The wavenumbers (cycles per domain) whose energy share is checked: the upper half of the training
    grid's, a quarter to half its side."""
    side = min(card.training_resolution)
    return max(1, side // 4), max(1, side // 2)


def band_shares(card: ModelCard, x: np.ndarray, wavenumbers: Sequence[int]) -> np.ndarray:
    """``(sample, channel)``: the share of each normalised channel's energy (its mean removed) at
    wavenumbers ``wavenumbers[0]..wavenumbers[1]`` (the largest over the axes), on the input's own grid."""
    z = _normalised(card, x)
    axes = tuple(range(2, z.ndim))
    z = z - z.mean(axis=axes, keepdims=True)
    power = np.abs(np.fft.rfftn(z, axes=axes)) ** 2
    grids = [np.abs(np.fft.fftfreq(n, 1.0 / n)) for n in z.shape[2:-1]]
    grids.append(np.arange(z.shape[-1] // 2 + 1, dtype=float))
    highest = functools.reduce(np.maximum, np.meshgrid(*grids, indexing="ij"))
    low, high = wavenumbers
    inside = (highest >= low) & (highest <= high)
    total = power.sum(axis=axes)
    return np.where(total > 0, (power * inside).sum(axis=axes) / np.where(total > 0, total, 1.0), 0.0)


@dataclass(frozen=True)
class InputStatistics:
    """The training inputs as the indicator sees them.

    Parameters
    ----------
    mean : ndarray, shape (features,)
        Mean of the training inputs' coarse features.
    basis : ndarray, shape (components, features)
        Their leading principal directions (orthonormal rows).
    projections : ndarray, shape (reference, components)
        Training inputs' coordinates in that basis.
    """

    mean: np.ndarray
    basis: np.ndarray
    projections: np.ndarray

    def distances(self, f: np.ndarray, neighbours: int, skip_self: bool = False) -> np.ndarray:
        """``sqrt(d^2 + r^2)`` of each row of coarse features ``f`` (without the floor); with
        ``skip_self``, the rows are the reference inputs and each one's own zero distance is left out."""
        centred = f - self.mean
        coordinates = centred @ self.basis.T
        residual = np.linalg.norm(centred - coordinates @ self.basis, axis=1)
        nearest = np.empty(len(f))
        skip = 1 if skip_self else 0
        for start in range(0, len(f), 256):  # bounded memory: 256 x reference distances at a time
            block = coordinates[start : start + 256]
            squared = ((block[:, None, :] - self.projections[None, :, :]) ** 2).sum(axis=2)
            k = min(neighbours + skip, squared.shape[1])
            closest = np.sqrt(np.partition(squared, k - 1, axis=1)[:, :k])
            nearest[start : start + 256] = np.sort(closest, axis=1)[:, skip:].mean(axis=1)
        return np.sqrt(nearest**2 + residual**2)

    def save(self, folder: Path) -> Weights:
        """Write the statistics as ``folder/STATISTICS_FILE`` (float32); its file name and sha256."""
        path = Path(folder) / STATISTICS_FILE
        save_file(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self._arrays().items()}, str(path)
        )
        return Weights(STATISTICS_FILE, hashlib.sha256(path.read_bytes()).hexdigest())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "basis": self.basis, "projections": self.projections}

    @classmethod
    def load(cls, folder: Path, record: Weights) -> InputStatistics:
        """The statistics of a version folder; ``CheckpointError`` when the file is missing or does not
        match the checksum its card records."""
        path = Path(folder) / record.file
        try:
            content = path.read_bytes()
        except OSError:
            raise CheckpointError(f"{model_file(path)} is missing or unreadable") from None
        if hashlib.sha256(content).hexdigest() != record.sha256:
            raise CheckpointError(f"{model_file(path)} does not match the checksum in its model card")
        arrays = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
        return cls(arrays["mean"], arrays["basis"], arrays["projections"])


def fit_statistics(card: ModelCard, x_train: np.ndarray) -> InputStatistics:
    """The statistics of training inputs ``x_train`` (``(sample, channel, *grid)``)."""
    f = features(card, coarse_side(card), x_train)
    mean = f.mean(axis=0)
    _, _, directions = np.linalg.svd(f - mean, full_matrices=False)
    basis = directions[:COMPONENTS]
    reference = f[:MAX_REFERENCE]
    return InputStatistics(mean, basis, (reference - mean) @ basis.T)


@dataclass(frozen=True)
class Flagged:
    """One sample's solver-free check: its indicator and why it lies outside the training data."""

    indicator: float
    reasons: tuple[str, ...]


class SolverFreeEstimator:
    """The served side: a card's solver-free calibration with its statistics, loaded once per version.

    Parameters
    ----------
    card : ModelCard
        A card with ``solver_free`` set.
    statistics : InputStatistics
        Its statistics file's content.
    """

    def __init__(self, card: ModelCard, statistics: InputStatistics) -> None:
        if card.solver_free is None:
            raise ValueError("the model card has no solver-free calibration")
        self.card, self.calibration, self.statistics = card, card.solver_free, statistics

    def check(self, inputs: Mapping[str, np.ndarray]) -> Flagged:
        """The indicator of one sample's inputs (no batch axis) and its out-of-distribution reasons."""
        card, calibration = self.card, self.calibration
        x = np.stack([np.asarray(inputs[name]) for name in card.input_names])[None]
        distance = float(
            self.statistics.distances(features(card, calibration.coarse_side, x), calibration.neighbours)[0]
        )
        reasons = []
        shares = band_shares(card, x, calibration.band)[0]
        for name, share, limit in zip(card.input_names, shares, calibration.band_limits, strict=True):
            if share > limit:
                reasons.append(
                    f"{name}: {share:.3g} of its energy at wavenumbers {calibration.band[0]}-"
                    f"{calibration.band[1]}, above the training inputs' {FLAG_QUANTILE:.0%} ({limit:.3g})"
                )
        if distance > calibration.distance_limit:
            reasons.append(
                f"inputs at distance {distance:.3g} from the training inputs, above the held-out "
                f"samples' {FLAG_QUANTILE:.0%} ({calibration.distance_limit:.3g})"
            )
        return Flagged(distance + calibration.floor, tuple(reasons))

    def estimate(self, inputs: Mapping[str, np.ndarray]) -> tuple[float, float, tuple[str, ...]]:
        """``(indicator, estimated relative L2 error, reasons)`` of one sample's inputs."""
        flagged = self.check(inputs)
        return flagged.indicator, self.calibration.scale * flagged.indicator, flagged.reasons


def load_estimator(folder: Path, card: ModelCard) -> SolverFreeEstimator | None:
    """The solver-free estimator of the version in ``folder`` (None when its card has none)."""
    if card.solver_free is None:
        return None
    return SolverFreeEstimator(card, InputStatistics.load(folder, card.solver_free.statistics))


def sample_errors(predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each sample's relative L2 error, the mean over its channels (as ``evaluation.relative_l2`` of
    that one sample)."""
    shape = (len(y), y.shape[1], -1)
    difference = (predictions.astype(np.float64) - y).reshape(shape)
    norm = np.linalg.norm(y.reshape(shape).astype(np.float64), axis=2)
    return (np.linalg.norm(difference, axis=2) / np.where(norm > 0, norm, 1.0)).mean(axis=1)


@dataclass(frozen=True)
class Calibrated:
    """A solver-free calibration and the statistics file content it needs."""

    calibration: SolverFreeCalibration
    statistics: InputStatistics


def calibrate(
    card: ModelCard,
    x_train: np.ndarray,
    x_held: np.ndarray,
    errors: np.ndarray,
    coverage: float,
    statistics_record: Weights | None = None,
) -> Calibrated:
    """Calibrate the estimate on held-out pairs and measure its coverage on others.

    The held-out pairs are split in two halves in their order: the first calibrates ``scale``
    (split-conformal, as ``validation.conformal_scale``), the second, never seen by the calibration,
    measures the fraction whose error is at most ``scale * g``.

    Parameters
    ----------
    card : ModelCard
        The model's card (normalisers, fields, training grid).
    x_train : ndarray, shape (sample, channel, *grid)
        The training split's inputs.
    x_held : ndarray, shape (sample, channel, *grid)
        Held-out inputs (never trained on), in order.
    errors : ndarray, shape (sample,)
        The model's relative L2 error on each held-out pair.
    coverage : float
        Stated coverage, in (0, 1).
    statistics_record : Weights, optional
        The statistics file, when already written (else a placeholder the caller replaces).
    """
    from pdeserve.operators.validation import conformal_scale, refuse_uncalibratable

    n_calibration = (len(x_held) + 1) // 2
    n_test = len(x_held) - n_calibration
    refuse_uncalibratable(n_calibration, coverage, "held-out calibration pairs")
    if n_test < 1:
        raise ValueError("no held-out pairs are left to measure the coverage on")
    statistics = fit_statistics(card, x_train)
    side = coarse_side(card)
    reference = statistics.distances(
        features(card, side, x_train[:MAX_REFERENCE]), NEIGHBOURS, skip_self=True
    )
    floor = FLOOR_FRACTION * float(np.median(reference))
    held = statistics.distances(features(card, side, x_held), NEIGHBOURS)
    g = held + floor
    scale = conformal_scale(errors[:n_calibration].tolist(), g[:n_calibration].tolist(), coverage)
    measured = float(np.mean(errors[n_calibration:] <= scale * g[n_calibration:]))
    wavenumbers = band(card)
    shares = band_shares(card, x_train, wavenumbers)
    return Calibrated(
        SolverFreeCalibration(
            indicator=INDICATOR,
            coverage=coverage,
            scale=scale,
            n_samples=n_calibration,
            measured_coverage=measured,
            n_test=n_test,
            statistics=statistics_record or Weights(STATISTICS_FILE, ""),
            coarse_side=side,
            neighbours=NEIGHBOURS,
            floor=floor,
            distance_limit=float(np.quantile(held[:n_calibration], FLAG_QUANTILE)),
            band=wavenumbers,
            band_limits=tuple(float(v) for v in np.quantile(shares, FLAG_QUANTILE, axis=0)),
        ),
        statistics,
    )
