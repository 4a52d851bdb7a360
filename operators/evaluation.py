"""Accuracy of neural operators: relative L2 error on datasets."""

from __future__ import annotations

import numpy as np
import torch
from neuralop.losses import LpLoss

from pdeserve.datagen.dataset import LoadedDataset
from pdeserve.operators.surrogate import Surrogate


def stack_fields(fields: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """``(sample, channel, *grid)`` float32 from per-field ``(sample, *grid)`` arrays."""
    return np.stack([fields[n] for n in names], axis=1).astype(np.float32, copy=False)


def relative_l2(prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """Mean over samples and channels of ``||prediction - target|| / ||target||``."""
    prediction, target = torch.as_tensor(np.array(prediction)), torch.as_tensor(np.array(target))
    return float(LpLoss(d=target.ndim - 2, p=2, reduction="mean").rel(prediction, target))


def evaluate(surrogate: Surrogate, data: LoadedDataset, batch_size: int = 32) -> dict[str, float]:
    """Relative L2 of ``surrogate`` on every sample of ``data`` (``relative_l2`` and per-sample spread)."""
    x = stack_fields(data.inputs, surrogate.input_names)
    y = stack_fields(data.outputs, surrogate.output_names)
    errors = []
    for lo in range(0, len(x), batch_size):
        pred = surrogate.forward(x[lo : lo + batch_size])
        loss = LpLoss(d=y.ndim - 2, p=2, reduction="mean")
        errors.extend(
            float(loss.rel(torch.from_numpy(p[None]), torch.from_numpy(t[None])))
            for p, t in zip(pred, y[lo : lo + batch_size], strict=True)
        )
    errors_np = np.asarray(errors)
    return {
        "relative_l2": float(errors_np.mean()),
        "relative_l2_median": float(np.median(errors_np)),
        "relative_l2_max": float(errors_np.max()),
        "n_samples": float(len(errors_np)),
    }
