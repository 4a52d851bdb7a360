"""Training and evaluation of neural operators on pdeserve datasets.

The recipe follows the FNO paper: per-channel Gaussian normalisation fitted on the training split,
relative L2 (or H1) loss on the de-normalised output, Adam with weight decay and a step, cosine or
one-cycle schedule. The held-out test split is the last ``test_fraction`` of the samples and the
validation split the ``val_fraction`` before it (samples are i.i.d., so these are random splits that
need no extra state). Every epoch can be checkpointed and resumed; CUDA trains in mixed precision;
``torchrun`` runs data-parallel.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from neuralop.losses import H1Loss, LpLoss

from pdeserve.datagen.dataset import LoadedDataset
from pdeserve.operators.checkpoint import save_checkpoint
from pdeserve.operators.distributed import Distributed
from pdeserve.operators.evaluation import evaluate, relative_l2
from pdeserve.operators.pairs import TimeMap, operator_pairs
from pdeserve.operators.registry import config_arguments, get_architecture, make_config
from pdeserve.operators.repository import ModelRepository
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.surrogate import Surrogate
from pdeserve.operators.training_state import (
    GeneratorState,
    ModelState,
    TrainingState,
    load_state,
    read_identity,
    save_state,
)


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


def channel_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and standard deviation of ``(sample, channel, *grid)``."""
    axes = (0, *range(2, x.ndim))
    return {
        "mean": x.mean(axis=axes, dtype=np.float64).tolist(),
        "std": x.std(axis=axes, dtype=np.float64).tolist(),
    }


def make_loss(name: str, ndim: int, periodic: bool) -> Any:
    """The relative training loss ``loss(prediction, target)``: neuraloperator's LpLoss or H1Loss."""
    if name == "h1":
        flags = {k: periodic for k in ("periodic_in_x", "periodic_in_y", "periodic_in_z")}
        return H1Loss(d=ndim, reduction="mean", **flags).rel
    return LpLoss(d=ndim, p=2, reduction="mean").rel


def make_scheduler(
    settings: TrainingSettings, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The learning-rate schedule and whether it steps every batch (one-cycle) or every epoch."""
    if settings.scheduler == "onecycle":
        total = settings.epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, settings.learning_rate, total_steps=total, div_factor=settings.onecycle_div
        )
        return schedule, True
    if settings.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, settings.step_size, settings.gamma), False
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs), False


@torch.no_grad()
def _predict(model: torch.nn.Module, surrogate: Surrogate, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """De-normalised predictions of ``model`` for already normalised inputs, in eval mode."""
    model.eval()
    out = torch.cat([model(x[lo : lo + batch_size]) for lo in range(0, len(x), batch_size)])
    return surrogate.output_normalizer.inverse_transform(out.float())


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
    there is a validation split) and its metrics, including the relative L2 of the trivial predictor
    (the training mean) on the same test split.
    """
    from tqdm import tqdm

    dist = Distributed.from_environment()
    device = dist.start(settings.resolve_device())
    torch.manual_seed(settings.seed)
    family = data.family
    pairs = operator_pairs(data, time_map)
    train_part, val_part, test_part = splits or split(
        len(pairs.x), settings.test_fraction, settings.val_fraction
    )
    x_train, y_train = pairs.x[train_part], pairs.y[train_part]
    boundary = family.boundary_conditions.split(":")[0]
    grid_shape = list(pairs.x.shape[2:])
    config = make_config(
        architecture,
        {
            **get_architecture(architecture).default_arguments(len(family.dims), boundary),
            **arguments,
            "in_channels": pairs.x.shape[1],
            "out_channels": pairs.y.shape[1],
        },
    )
    problem = config.resolutions().check(tuple(grid_shape))
    if problem:
        raise ValueError(f"the dataset's grid {tuple(grid_shape)} does not suit {architecture}: {problem}")
    record = {
        "architecture": architecture,
        "arguments": config_arguments(config),
        "pde": family.name,
        "pde_parameters": data.parameters.as_dict(),
        "dims": list(family.dims),
        "inputs": pairs.inputs,
        "outputs": pairs.outputs,
        "time_map": pairs.time_map,
        "training_resolution": grid_shape,
        # A fine-tuned model keeps its parent's normalisers: its weights only mean something with them.
        "normalizers": initial.config["normalizers"]
        if initial
        else {"inputs": channel_stats(x_train), "outputs": channel_stats(y_train)},
        "dataset": {
            "fingerprint": data.fingerprint(),
            "n_samples": len(pairs.x),
            "n_train": len(x_train),
            "n_validation": val_part.stop - val_part.start,
            "n_test": test_part.stop - test_part.start,
        },
        "training": asdict(settings),
        "pdeserve_version": version("pdeserve"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    surrogate = Surrogate(name="", version="", config=record, metrics={}, model=config.build())
    if initial:
        surrogate.model.load_state_dict(initial.model.state_dict())
    surrogate.to(device)
    model = dist.wrap(surrogate.model, device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    steps_per_epoch = math.ceil(len(dist.shard(torch.arange(len(x_train)))) / settings.batch_size)
    scheduler, per_batch = make_scheduler(settings, optimizer, steps_per_epoch)
    loss_fn = make_loss(settings.loss, len(grid_shape), boundary == "periodic")
    amp = settings.use_amp(device) and _mixed_precision_works(model, x_train[:2], device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    generator = torch.Generator().manual_seed(settings.seed)
    x_train_t = surrogate.input_normalizer.transform(torch.from_numpy(x_train).to(device))
    y_train_t = torch.from_numpy(y_train).to(device)
    x_val_t = surrogate.input_normalizer.transform(torch.from_numpy(pairs.x[val_part]).to(device))
    y_val_t = torch.from_numpy(pairs.y[val_part]).to(device)

    components = {
        "model": ModelState(surrogate.model),
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "generator": GeneratorState(generator),
    }
    identity = {
        "architecture": architecture,
        "arguments": record["arguments"],
        "dataset": record["dataset"]["fingerprint"],
        "time_map": pairs.time_map,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("epochs", "device")},
    }
    state = TrainingState(identity=identity)
    folder = Path(checkpoint_dir) if checkpoint_dir else None
    if folder and resume:
        recorded = read_identity(folder)
        if recorded is not None and json.loads(json.dumps(identity)) != recorded:
            raise ValueError(
                f"the checkpoint in {folder} belongs to another run (model, data or settings differ); "
                "remove it or train without --resume"
            )
        state = load_state(folder, components) or state
        if state.epoch and dist.is_main:
            print(f"resuming from {folder} after epoch {state.epoch} of {settings.epochs}", file=sys.stderr)
    best_weights = copy.deepcopy(surrogate.model.state_dict())
    writer = _tensorboard(tensorboard_dir) if dist.is_main else None
    started = time.perf_counter()
    bar = tqdm(
        range(state.epoch, settings.epochs),
        initial=state.epoch,
        total=settings.epochs,
        desc=f"train {architecture}",
        unit="epoch",
        disable=not (progress and dist.is_main),
    )
    for epoch in bar:
        model.train()
        epoch_started, total, count = time.perf_counter(), 0.0, 0
        order = dist.shard(torch.randperm(len(x_train_t), generator=generator))
        for idx in order.split(settings.batch_size):
            idx = idx.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out = model(x_train_t[idx])
            # The loss in float32: relative norms of half-precision residuals lose digits fast.
            loss = loss_fn(surrogate.output_normalizer.inverse_transform(out.float()), y_train_t[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if settings.grad_clip:
                scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if per_batch:
                scheduler.step()
            total += loss.item() * len(idx)
            count += len(idx)
        if not per_batch:
            scheduler.step()
        entry = {
            "epoch": epoch + 1,
            "train_loss": total / count,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - epoch_started,
        }
        if len(x_val_t):
            entry["val_relative_l2"] = relative_l2(
                _predict(model, surrogate, x_val_t, settings.batch_size), y_val_t
            )
            if entry["val_relative_l2"] < state.best_val:
                state.best_val, state.best_epoch = entry["val_relative_l2"], epoch + 1
                best_weights = copy.deepcopy(surrogate.model.state_dict())
        state.epoch = epoch + 1
        state.history.append(entry)
        bar.set_postfix({k: f"{v:.4f}" for k, v in entry.items() if k in ("train_loss", "val_relative_l2")})
        if writer is not None:
            for key in ("train_loss", "val_relative_l2", "learning_rate"):
                if key in entry:
                    writer.add_scalar(key, entry[key], epoch + 1)
        if folder and dist.is_main:
            save_state(folder, state, components)
            (folder / "history.json").write_text(json.dumps(state.history, indent=1) + "\n")
        if settings.patience and epoch + 1 - state.best_epoch >= settings.patience:
            if dist.is_main:
                print(f"early stop after epoch {epoch + 1}: best validation at epoch {state.best_epoch}")
            break
    bar.close()
    if writer is not None:
        writer.close()
    if len(x_val_t):
        surrogate.model.load_state_dict(best_weights)
    surrogate.model.eval()
    seconds = time.perf_counter() - started
    test = evaluate(surrogate, subset(data, test_part))
    y_test = pairs.y[test_part]
    baseline = relative_l2(np.broadcast_to(y_train.mean(axis=0), y_test.shape), y_test)
    epoch_seconds = sum(h["seconds"] for h in state.history)
    metrics = {
        "test_relative_l2": test["relative_l2"],
        "test_relative_l2_median": test["relative_l2_median"],
        "test_relative_l2_max": test["relative_l2_max"],
        "train_loss": state.history[-1]["train_loss"] if state.history else float("nan"),
        "baseline_mean_relative_l2": baseline,
        "train_seconds": seconds,
        "epochs": float(state.epoch),
        "samples_per_second": len(x_train) * len(state.history) / epoch_seconds if epoch_seconds else 0.0,
    }
    if len(x_val_t):
        metrics["best_val_relative_l2"] = state.best_val
        metrics["best_epoch"] = float(state.best_epoch)
    surrogate.config["history"] = state.history
    surrogate.metrics = metrics
    dist.barrier()
    return surrogate.to("cpu"), metrics


def _mixed_precision_works(model: torch.nn.Module, sample: np.ndarray, device: torch.device) -> bool:
    """Try one float16 forward and backward: cuFFT runs half precision on power-of-two sizes only, so
    a spectral model on another grid cannot use AMP; it then trains in float32 (and says so)."""
    try:
        with torch.autocast(device.type, dtype=torch.float16):
            model(torch.from_numpy(sample).to(device)).float().sum().backward()
        return True
    except RuntimeError as exc:
        print(
            f"mixed precision unavailable here ({str(exc).splitlines()[0]}); training in float32",
            file=sys.stderr,
        )
        return False
    finally:
        model.zero_grad(set_to_none=True)


def _tensorboard(log_dir: str | Path | None) -> Any:
    """A TensorBoard ``SummaryWriter`` for ``log_dir``, or None (no folder asked for)."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(log_dir))


def publish(repo: str | Path, name: str, surrogate: Surrogate) -> str:
    """Publish a trained surrogate as the next version of ``name``; returns the version."""

    def write(folder: Path) -> None:
        save_checkpoint(folder, surrogate.model, surrogate.config)
        (folder / "metrics.json").write_text(json.dumps(surrogate.metrics, indent=2, sort_keys=True) + "\n")

    return ModelRepository(repo).publish(name, write)
