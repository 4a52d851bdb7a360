"""Training and evaluation of neural operators on pdeserve datasets.

The recipe follows the FNO paper: per-channel Gaussian normalisation fitted on the training split, then
the loop of ``operators/trainer.py``. The held-out test split is the last ``test_fraction`` of the
samples and the validation split the ``val_fraction`` before it (samples are i.i.d., so these are random
splits that need no extra state).

:func:`train` is :func:`prepare` (pairs, split, normalisers, the model card), a
:class:`~pdeserve.operators.trainer.Trainer`'s loop, and the test metrics; :func:`publish` writes the
result to a model repository.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pdeserve.datagen.dataset import LoadedDataset
from pdeserve.operators import validation
from pdeserve.operators.card import (
    ChannelStats,
    DatasetSummary,
    FamilySource,
    ModelCard,
    Normalizers,
    TimeMap,
)
from pdeserve.operators.checkpoint import save_weights
from pdeserve.operators.distributed import Distributed
from pdeserve.operators.evaluation import evaluate, relative_l2
from pdeserve.operators.pairs import operator_pairs
from pdeserve.operators.registry import config_arguments, get_architecture, make_config
from pdeserve.operators.repository import ModelRepository, write_card
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.surrogate import Surrogate
from pdeserve.operators.trainer import Trainer, TrainingRun
from pdeserve.operators.training_state import TrainingState


def split(n: int, test_fraction: float, val_fraction: float = 0.0) -> tuple[slice, slice, slice]:
    """Train, validation and test slices: the last ``ceil(n * test_fraction)`` samples are the test
    split and the ``ceil(n * val_fraction)`` before them the validation split (empty when 0)."""
    n_test = max(1, math.ceil(n * test_fraction))
    n_val = math.ceil(n * val_fraction)
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} samples cannot be split into training, validation and test sets")
    return slice(0, n - n_test - n_val), slice(n - n_test - n_val, n - n_test), slice(n - n_test, n)


def subset(data: LoadedDataset, part: slice) -> LoadedDataset:
    """The samples ``part`` of ``data`` (views, no copy)."""
    return LoadedDataset(
        data.attrs,
        {k: v[part] for k, v in data.inputs.items()},
        {k: v[part] for k, v in data.outputs.items()},
    )


def channel_stats(x: np.ndarray) -> ChannelStats:
    """Per-channel mean and standard deviation of ``(sample, channel, *grid)``."""
    axes = (0, *range(2, x.ndim))
    return ChannelStats(
        mean=tuple(x.mean(axis=axes, dtype=np.float64).tolist()),
        std=tuple(x.std(axis=axes, dtype=np.float64).tolist()),
    )


def family_source(data: LoadedDataset) -> FamilySource:
    """Where ``data``'s family comes from: the distribution that registers it, or, for imported data
    (no registered family, no solver), the format it was imported from."""
    origin = data.family.origin
    if origin is not None:
        return FamilySource(origin.distribution, origin.version)
    return FamilySource(None, None, str(data.attrs.get("source_format", "unknown")))


def prepare(
    data: LoadedDataset,
    architecture: str,
    arguments: dict[str, Any],
    settings: TrainingSettings,
    time_map: TimeMap | None = None,
    splits: tuple[slice, slice, slice] | None = None,
    initial: Surrogate | None = None,
) -> TrainingRun:
    """The pairs, split, network config and card of a run; ``ValueError`` before any work when the
    arguments or the grid do not suit ``architecture``. Parameters as for :func:`train`."""
    family = data.family
    pairs = operator_pairs(data, time_map)
    parts = splits or split(len(pairs.x), settings.test_fraction, settings.val_fraction)
    grid = tuple(pairs.x.shape[2:])
    config = make_config(
        architecture,
        {
            **get_architecture(architecture).default_arguments(len(family.dims), family.boundary),
            **arguments,
            "in_channels": pairs.x.shape[1],
            "out_channels": pairs.y.shape[1],
        },
    )
    problem = config.resolutions().check(grid)
    if problem:
        raise ValueError(f"the dataset's grid {grid} does not suit {architecture}: {problem}")
    x_train, y_train = pairs.x[parts[0]], pairs.y[parts[0]]
    card = ModelCard(
        architecture=architecture,
        arguments=config_arguments(config),
        pde=family.name,
        pde_parameters=data.parameters.as_dict(),
        dims=tuple(family.dims),
        inputs=pairs.inputs,
        outputs=pairs.outputs,
        training_resolution=grid,
        # A fine-tuned model keeps its parent's normalisers: its weights only mean something with them.
        normalizers=initial.card.normalizers
        if initial
        else Normalizers(channel_stats(x_train), channel_stats(y_train)),
        dataset=DatasetSummary(
            fingerprint=data.fingerprint(),
            n_samples=len(pairs.x),
            n_train=len(x_train),
            n_validation=parts[1].stop - parts[1].start,
            n_test=parts[2].stop - parts[2].start,
        ),
        training=settings,
        pdeserve_version=version("pdeserve"),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        time_map=pairs.time_map,
        family=family_source(data),
    )
    return TrainingRun(pairs, parts, config, card, family.boundary == "periodic")


def train(
    data: LoadedDataset,
    architecture: str,
    arguments: dict[str, Any],
    settings: TrainingSettings,
    progress: bool = True,
    time_map: TimeMap | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    tensorboard_dir: str | Path | None = None,
    splits: tuple[slice, slice, slice] | None = None,
    initial: Surrogate | None = None,
) -> tuple[Surrogate, dict[str, float]]:
    """Fit ``architecture`` on ``data``'s training split and evaluate it on the held-out test split.

    Parameters
    ----------
    data : LoadedDataset
        The dataset (steady or trajectory).
    architecture : str
        Registry name (``fno``, ``tfno``, ``mgno``, ``galerkin``).
    arguments : dict
        Architecture arguments overriding the registry's defaults for this grid.
    settings : TrainingSettings
        Optimisation settings.
    progress : bool
        Show a progress bar (loss, validation error, ETA).
    time_map : TimeMap, optional
        Input and output steps of a trajectory dataset (default: initial state to all stored states).
    checkpoint_dir : path, optional
        Folder for the per-epoch training state (and ``history.json``).
    resume : bool
        Continue from the state in ``checkpoint_dir`` when there is one of the same run.
    tensorboard_dir : path, optional
        Also log the per-epoch history for TensorBoard (needs the ``tensorboard`` package).
    splits : (slice, slice, slice), optional
        Explicit train, validation and test slices of the samples (default: ``split`` with the
        settings' fractions). Retraining orders several datasets so that each keeps its own split.
    initial : Surrogate, optional
        Fine-tune: start from this model's weights and keep its normalisers (``architecture`` and
        ``arguments`` must be its own), instead of a fresh initialisation and normalisers fitted here.

    Returns the trained surrogate (name and version unset; the best validation epoch's weights when
    there is a validation split; metrics and history in its card) and its metrics, including the
    relative L2 of the trivial predictor (the training mean) on the same test split.
    """
    dist = Distributed.from_environment()
    device = dist.start(settings.resolve_device())
    torch.manual_seed(settings.seed)
    run = prepare(data, architecture, arguments, settings, time_map, splits, initial)
    surrogate = Surrogate(name="", version="", card=run.card, model=run.config.build())
    if initial:
        surrogate.model.load_state_dict(initial.model.state_dict())
    surrogate.to(device)
    trainer = Trainer(run, surrogate, settings, dist, device, checkpoint_dir)
    if checkpoint_dir and resume:
        trainer.resume()
    started = time.perf_counter()
    state = trainer.fit(progress, tensorboard_dir)
    surrogate.to(device)  # its served twin snapshots weights: take the trained ones
    metrics = final_metrics(surrogate, data, run, state, time.perf_counter() - started)
    surrogate.card = surrogate.card.replace(metrics=metrics, history=tuple(state.history))
    dist.barrier()
    return surrogate.to("cpu"), metrics


def final_metrics(
    surrogate: Surrogate, data: LoadedDataset, run: TrainingRun, state: TrainingState, seconds: float
) -> dict[str, float]:
    """The metrics of a trained surrogate: its error on the test split next to the training mean's,
    the final training loss, and the training time (``seconds``) and throughput."""
    test = evaluate(surrogate, subset(data, run.parts[2]))
    (x_train, y_train), (_, y_test) = run.samples(0), run.samples(2)
    baseline = relative_l2(np.broadcast_to(y_train.mean(axis=0), y_test.shape), y_test)
    epoch_seconds = sum(e.seconds for e in state.history)
    metrics = {
        "test_relative_l2": test["relative_l2"],
        "test_relative_l2_median": test["relative_l2_median"],
        "test_relative_l2_max": test["relative_l2_max"],
        "train_loss": state.history[-1].train_loss if state.history else float("nan"),
        "baseline_mean_relative_l2": baseline,
        "train_seconds": seconds,
        "epochs": float(state.epoch),
        "samples_per_second": len(x_train) * len(state.history) / epoch_seconds if epoch_seconds else 0.0,
    }
    if run.card.dataset.n_validation:
        metrics["best_val_relative_l2"] = state.best_val
        metrics["best_epoch"] = float(state.best_epoch)
    return metrics


def record_checks(
    surrogate: Surrogate, data: LoadedDataset, sweep_samples: int, seed: int, coverage: float = 0.9
) -> ModelCard:
    """The surrogate's card with what it promises about its errors, measured before publishing: the
    resolution sweep (``sweep_samples`` fresh samples per side; 0, or a family without a sampler, skips
    it), the indicator's calibration on the held-out test split (None when it has fewer samples than
    ``coverage`` needs, or the family no indicator) and each
    input's range over the training split (``operators/validation.py``).

    Parameters
    ----------
    surrogate : Surrogate
        The trained model; its card's dataset summary says how ``data`` was split.
    data : LoadedDataset
        The dataset it was trained on.
    sweep_samples : int
        Fresh samples per grid side of the sweep.
    seed : int
        Seeds the sweep's fresh samples.
    coverage : float
        Stated coverage of the error estimate.
    """
    card = surrogate.card
    family = data.family
    pairs = operator_pairs(data, card.time_map)
    n, n_test = card.dataset.n_samples, card.dataset.n_test
    x_test, y_test = pairs.x[n - n_test : n], pairs.y[n - n_test : n]
    # A family without an indicator (imported data: no solver at all) has nothing to calibrate, and one
    # without a sampler no fresh samples for the sweep.
    scored = family.stepper is not None if card.time_map is not None else family.indicator is not None
    calibration = (
        validation.calibrate(surrogate, x_test, y_test, coverage)
        if scored and n_test >= validation.min_samples(coverage)
        else None
    )
    sweep = sweep_samples if family.sample is not None else 0
    return card.replace(
        validation=validation.validate_resolutions(surrogate, sweep, seed) if sweep else None,
        calibration=calibration,
        input_ranges=validation.input_ranges(card.input_names, pairs.x[: card.dataset.n_train]),
    )


def publish(repo: str | Path, name: str, surrogate: Surrogate, parent: str | None = None) -> str:
    """Publish a trained surrogate as the next version of ``name``: its weights, then its card with
    their checksum and the parameter count. Returns the version. With ``parent``, only if that version
    is still the newest (``StaleParentError`` otherwise, see ``ModelRepository.publish``)."""

    def write(folder: Path) -> None:
        weights = save_weights(folder, surrogate.model)
        card = surrogate.card.replace(weights=weights, parameter_count=surrogate.parameter_count())
        write_card(folder, card)

    return ModelRepository(repo).publish(name, write, parent)
