"""A published model ready to run: architecture + weights + normalisers + field specs.

``load_model(repo, name, version=None)`` is the one-call Python API; the server uses the same class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from neuralop.data.transforms.normalizers import UnitGaussianNormalizer

from pdeserve.operators.acceleration import served_module
from pdeserve.operators.card import ChannelStats, ModelCard
from pdeserve.operators.checkpoint import load_weights
from pdeserve.operators.errors import CheckpointError, InvalidInputError
from pdeserve.operators.registry import make_config
from pdeserve.operators.repository import ModelRepository, read_card
from pdeserve.operators.resolution import ResolutionRule

FLOAT32_MAX = float(np.finfo(np.float32).max)


def channel_normalizer(stats: ChannelStats, ndim: int) -> UnitGaussianNormalizer:
    """A per-channel normaliser from recorded statistics; resolution independent."""
    shape = (1, len(stats.mean)) + (1,) * ndim
    mean = torch.tensor(stats.mean, dtype=torch.float32).reshape(shape)
    std = torch.tensor(stats.std, dtype=torch.float32).reshape(shape)
    return UnitGaussianNormalizer(mean=mean, std=std, dim=[0, *range(2, 2 + ndim)])


@dataclass
class Surrogate:
    """A neural operator with its normalisers and metadata.

    Parameters
    ----------
    name, version : str
        Identity in the model repository.
    card : ModelCard
        What the version records: architecture, fields, normalisers, PDE, metrics, lineage.
    model : torch.nn.Module
        The network, in eval mode: the reference. ``forward`` runs its inference twin
        (``operators/acceleration.py``), which gives the same answers faster; rebuild the surrogate (or
        call ``to``) after changing the model's weights.
    """

    name: str
    version: str
    card: ModelCard
    model: torch.nn.Module

    def __post_init__(self) -> None:
        card = self.card
        self.input_normalizer = channel_normalizer(card.normalizers.inputs, card.ndim)
        self.output_normalizer = channel_normalizer(card.normalizers.outputs, card.ndim)
        self.resolutions: ResolutionRule = make_config(card.architecture, card.arguments).resolutions()
        self.device = torch.device("cpu")
        self.served = served_module(self.model, self.device)

    @property
    def input_names(self) -> list[str]:
        return self.card.input_names

    @property
    def output_names(self) -> list[str]:
        return self.card.output_names

    @property
    def ndim(self) -> int:
        return self.card.ndim

    def to(self, device: str | torch.device) -> Surrogate:
        """Move the model and normalisers to ``device``."""
        self.device = torch.device(device)
        for module in (self.model, self.input_normalizer, self.output_normalizer):
            module.to(self.device)
        self.served = served_module(self.model, self.device)
        return self

    def warm_up(self, batch: int = 1, sides: tuple[int, ...] | None = None) -> None:
        """Run one forward pass on zeros so the first request does not pay for one-off set-up (DFT
        matrices, oneDNN kernels); a server calls it once per replica after loading.

        Parameters
        ----------
        batch : int
            Batch size of the warm-up input.
        sides : tuple of int, optional
            Grid sides; the model's training resolution when omitted.
        """
        sides = sides or tuple(self.card.training_resolution)
        self.forward(np.zeros((batch, len(self.input_names), *sides), dtype=np.float32))

    def validate(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, bool]:
        """Check ``inputs`` and stack them as ``(batch, channels, *grid)`` float32.

        Returns the stacked array and whether the caller passed a batch dimension.
        Raises ``InvalidInputError`` naming what was expected.
        """
        names = self.input_names
        if set(inputs) != set(names):
            raise InvalidInputError(f"model {self.name} expects input fields {names}, got {sorted(inputs)}")
        arrays = []
        for field in names:
            array = np.asarray(inputs[field])
            if array.dtype not in (np.float32, np.float64):
                raise InvalidInputError(f"input {field!r} must be float32 or float64, got {array.dtype}")
            if array.ndim not in (self.ndim, self.ndim + 1):
                grid = ", ".join(self.card.dims)
                raise InvalidInputError(
                    f"input {field!r} must have rank {self.ndim} ({grid}) or "
                    f"{self.ndim + 1} (batch, {grid}), got shape {tuple(array.shape)}"
                )
            if array.size == 0:
                raise InvalidInputError(f"input {field!r} is empty (shape {tuple(array.shape)})")
            sides = tuple(array.shape[-self.ndim :])
            problem = self.resolutions.check(sides)
            if problem:
                raise InvalidInputError(f"input {field!r} has grid {sides}: {problem}")
            if not np.all(np.isfinite(array)):
                raise InvalidInputError(f"input {field!r} contains NaN or Inf values")
            if np.abs(array).max() > FLOAT32_MAX:  # would become inf in the float32 model
                raise InvalidInputError(
                    f"input {field!r} holds values up to {np.abs(array).max():.3g}, beyond float32's "
                    f"{FLOAT32_MAX:.3g}, which the model computes in"
                )
            arrays.append(array)
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise InvalidInputError(f"input fields must share one shape, got {sorted(shapes)}")
        batched = arrays[0].ndim == self.ndim + 1
        stacked = np.stack([a if batched else a[None] for a in arrays], axis=1).astype(np.float32, copy=False)
        return stacked, batched

    @torch.inference_mode()
    def forward(self, stacked: np.ndarray) -> np.ndarray:
        """Validated ``(batch, in_channels, *grid)`` in, ``(batch, out_channels, *grid)`` float32 out."""
        x = self.input_normalizer.transform(torch.from_numpy(stacked).to(self.device))
        y = self.output_normalizer.inverse_transform(self.served(x))
        return y.float().cpu().numpy()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Solve for ``inputs``: ``{"a": array}`` of shape ``(batch, *grid)`` or ``(*grid)`` ->
        ``{"u": array}`` of the same layout, float32."""
        stacked, batched = self.validate(inputs)
        out = self.forward(stacked)
        return {name: out[:, i] if batched else out[0, i] for i, name in enumerate(self.output_names)}

    def parameter_count(self) -> int:
        return sum(p.numel() * (2 if p.is_complex() else 1) for p in self.model.parameters())


def load_surrogate(folder: Path, name: str, version: str) -> Surrogate:
    """Rebuild a surrogate from a version folder (model card + verified safetensors)."""
    card = read_card(folder)
    if card.weights is None:
        raise CheckpointError(f"the model card of {name} v{version} names no weights file")
    model = make_config(card.architecture, card.arguments).build()
    load_weights(folder, card.weights, model)
    return Surrogate(name=name, version=version, card=card, model=model.eval())


def load_model(repo: str | os.PathLike, name: str, version: str | int | None = None) -> Surrogate:
    """Load a published model in one call: ``load_model("models", "darcy-fno").predict({"a": a})``.

    Parameters
    ----------
    repo : path
        Model repository folder.
    name : str
        Model name.
    version : str or int, optional
        Version number; the newest when omitted.
    """
    version, folder = ModelRepository(repo).resolve(name, version)
    return load_surrogate(folder, name, version)
