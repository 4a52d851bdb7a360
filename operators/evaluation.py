"""Accuracy of neural operators: relative L2 error on datasets, at any resolution, and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from neuralop.losses import LpLoss

from pdeserve.datagen.dataset import LoadedDataset
from pdeserve.operators.pairs import OperatorPairs, operator_pairs
from pdeserve.operators.surrogate import Surrogate


def relative_l2(prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """Mean over samples and channels of ``||prediction - target|| / ||target||`` (neuraloperator LpLoss)."""
    prediction, target = (
        x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.array(x))
        for x in (prediction, target)
    )
    return float(LpLoss(d=target.ndim - 2, p=2, reduction="mean").rel(prediction, target))


def pairs_for(surrogate: Surrogate, data: LoadedDataset) -> OperatorPairs:
    """``data``'s pairs in the layout ``surrogate`` was trained on; ``ValueError`` if they do not fit."""
    card = surrogate.card
    if data.attrs["pde"] != card.pde:
        raise ValueError(f"the dataset holds {data.attrs['pde']}, the model solves {card.pde}")
    pairs = operator_pairs(data, card.time_map)
    names = ([f.name for f in pairs.inputs], [f.name for f in pairs.outputs])
    if names != (card.input_names, card.output_names):
        raise ValueError(
            f"the dataset's fields {names[0]} -> {names[1]} are not the model's "
            f"{surrogate.input_names} -> {surrogate.output_names}"
        )
    return pairs


def predict_pairs(surrogate: Surrogate, pairs: OperatorPairs, batch_size: int = 32) -> np.ndarray:
    """The surrogate's predictions for every input of ``pairs``, ``(sample, channel, *grid)``."""
    return np.concatenate(
        [surrogate.forward(pairs.x[lo : lo + batch_size]) for lo in range(0, len(pairs.x), batch_size)]
    )


def evaluate(surrogate: Surrogate, data: LoadedDataset, batch_size: int = 32) -> dict[str, float]:
    """Relative L2 of ``surrogate`` on every sample of ``data`` (mean, median, max) and its grid side."""
    pairs = pairs_for(surrogate, data)
    prediction = predict_pairs(surrogate, pairs, batch_size)
    errors = np.array(
        [relative_l2(prediction[i : i + 1], pairs.y[i : i + 1]) for i in range(len(prediction))]
    )
    return {
        "relative_l2": float(errors.mean()),
        "relative_l2_median": float(np.median(errors)),
        "relative_l2_max": float(errors.max()),
        "n_samples": float(len(errors)),
        "resolution": float(pairs.x.shape[-1]),
    }


def plot_predictions(surrogate: Surrogate, data: LoadedDataset, path: str | Path, samples: int = 3) -> Path:
    """A PNG with one row per sample: input, truth, prediction and error (first channel of each)."""
    from pdeserve.datagen.plots import save_panels

    pairs = pairs_for(surrogate, data)
    count = min(samples, len(pairs.x))
    prediction = predict_pairs(surrogate, OperatorPairs(pairs.x[:count], pairs.y[:count], (), (), None))
    name_in, name_out = pairs.inputs[0].name, pairs.outputs[-1].name
    rows = [
        [
            (f"{name_in} #{i}", pairs.x[i, 0]),
            (f"{name_out} truth", pairs.y[i, -1]),
            (f"{name_out} prediction", prediction[i, -1]),
            (
                f"error (rel L2 {relative_l2(prediction[i : i + 1], pairs.y[i : i + 1]):.2%})",
                prediction[i, -1] - pairs.y[i, -1],
            ),
        ]
        for i in range(count)
    ]
    return save_panels(rows, path, title=f"{surrogate.name} v{surrogate.version}")
