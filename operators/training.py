"""Training and evaluation of neural operators on pdeserve datasets.

The recipe follows the FNO paper: per-channel Gaussian normalisation fitted on the training split,
relative L2 loss (neuraloperator's ``LpLoss``) on the de-normalised output, Adam with weight decay and
a step or cosine schedule. The held-out split is the last ``test_fraction`` of the samples (samples
are i.i.d., so this is a random split that needs no extra state).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from neuralop.losses import LpLoss

from pdeserve.datagen.dataset import LoadedDataset
from pdeserve.operators.checkpoint import save_checkpoint
from pdeserve.operators.evaluation import evaluate, relative_l2, stack_fields
from pdeserve.operators.registry import config_arguments, get_architecture, make_config
from pdeserve.operators.repository import ModelRepository
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.surrogate import Surrogate


def split(n: int, test_fraction: float) -> tuple[slice, slice]:
    """Train and test slices: the last ``ceil(n * test_fraction)`` samples are held out."""
    n_test = max(1, math.ceil(n * test_fraction))
    if n - n_test < 1:
        raise ValueError(f"{n} samples cannot be split into training and test sets")
    return slice(0, n - n_test), slice(n - n_test, n)


def channel_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and standard deviation of ``(sample, channel, *grid)``."""
    axes = (0, *range(2, x.ndim))
    return {
        "mean": x.mean(axis=axes, dtype=np.float64).tolist(),
        "std": x.std(axis=axes, dtype=np.float64).tolist(),
    }


def train(
    data: LoadedDataset,
    architecture: str,
    arguments: dict[str, Any],
    settings: TrainingSettings,
    progress: bool = True,
) -> tuple[Surrogate, dict[str, float]]:
    """Fit ``architecture`` on ``data``'s training split and evaluate on its held-out split.

    Returns the trained surrogate (name and version unset) and its metrics, including the
    relative L2 of the trivial predictor (the training mean) on the same held-out split.
    """
    from tqdm import tqdm

    torch.manual_seed(settings.seed)
    device = settings.resolve_device()
    family = data.family
    input_names, output_names = data.attrs["input_fields"], data.attrs["output_fields"]
    trajectories = [f.name for f in (*family.inputs, *family.outputs) if f.dims != family.dims]
    if trajectories:
        raise ValueError(
            f"{family.name} fields {', '.join(trajectories)} have a time axis; training maps fields on "
            f"the grid {family.dims} only so far"
        )
    x_all, y_all = stack_fields(data.inputs, input_names), stack_fields(data.outputs, output_names)
    train_part, test_part = split(len(x_all), settings.test_fraction)
    x_train, y_train = x_all[train_part], y_all[train_part]
    arch = get_architecture(architecture)
    config = make_config(
        architecture,
        {
            **arch.default_arguments(len(family.dims), family.boundary_conditions.split(":")[0]),
            **arguments,
            "in_channels": len(input_names),
            "out_channels": len(output_names),
        },
    )
    grid_shape = list(x_all.shape[2:])
    problem = config.resolutions().check(tuple(grid_shape))
    if problem:
        raise ValueError(f"the dataset's grid {tuple(grid_shape)} does not suit {architecture}: {problem}")
    record = {
        "architecture": architecture,
        "arguments": config_arguments(config),
        "pde": family.name,
        "pde_parameters": data.parameters.as_dict(),
        "dims": list(family.dims),
        "inputs": [{"name": f.name, "description": f.description} for f in family.inputs],
        "outputs": [{"name": f.name, "description": f.description} for f in family.outputs],
        "training_resolution": grid_shape,
        "normalizers": {"inputs": channel_stats(x_train), "outputs": channel_stats(y_train)},
        "dataset": {
            "fingerprint": data.fingerprint(),
            "n_samples": len(x_all),
            "n_train": len(x_train),
            "n_test": len(x_all) - len(x_train),
        },
        "training": asdict(settings),
        "pdeserve_version": version("pdeserve"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    surrogate = Surrogate(name="", version="", config=record, metrics={}, model=config.build()).to(device)
    model = surrogate.model
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    if settings.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=settings.step_size, gamma=settings.gamma
        )
    loss_fn = LpLoss(d=len(grid_shape), p=2, reduction="mean")
    x_train_t = surrogate.input_normalizer.transform(torch.from_numpy(x_train).to(device))
    y_train_t = torch.from_numpy(y_train).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc=f"train {architecture}", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        total, count = 0.0, 0
        for idx in torch.randperm(len(x_train_t), generator=generator).split(settings.batch_size):
            idx = idx.to(device)
            pred = surrogate.output_normalizer.inverse_transform(model(x_train_t[idx]))
            loss = loss_fn.rel(pred, y_train_t[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        scheduler.step()
        bar.set_postfix(train_rel_l2=f"{total / count:.4f}")
    model.eval()
    seconds = time.perf_counter() - started
    held_out = LoadedDataset(
        data.attrs,
        {k: v[test_part] for k, v in data.inputs.items()},
        {k: v[test_part] for k, v in data.outputs.items()},
    )
    test = evaluate(surrogate, held_out)
    baseline = relative_l2(np.broadcast_to(y_train.mean(axis=0), y_all[test_part].shape), y_all[test_part])
    metrics = {
        "test_relative_l2": test["relative_l2"],
        "test_relative_l2_median": test["relative_l2_median"],
        "test_relative_l2_max": test["relative_l2_max"],
        "train_relative_l2": total / count,
        "baseline_mean_relative_l2": baseline,
        "train_seconds": seconds,
        "epochs": float(settings.epochs),
        "samples_per_second": settings.epochs * len(x_train) / seconds,
    }
    surrogate.metrics = metrics
    return surrogate.to("cpu"), metrics


def publish(repo: str | Path, name: str, surrogate: Surrogate) -> str:
    """Publish a trained surrogate as the next version of ``name``; returns the version."""

    def write(folder: Path) -> None:
        save_checkpoint(folder, surrogate.model, surrogate.config)
        (folder / "metrics.json").write_text(json.dumps(surrogate.metrics, indent=2, sort_keys=True) + "\n")

    return ModelRepository(repo).publish(name, write)
