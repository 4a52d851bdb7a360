"""Weights in safetensors. Nothing here ever unpickles.

A version's folder holds ``model.safetensors`` beside its model card (``config.json``, written by the
repository); the card records the sha256 of the weights file, so a tampered or truncated file is
refused before any tensor reaches a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pdeserve.operators.card import Weights
from pdeserve.operators.errors import CheckpointError, model_file

WEIGHTS_FILE = "model.safetensors"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``model``'s state dict (what a checkpoint stores)."""
    # neuraloperator models keep a non-tensor "_metadata" extra state; the JSON config replaces it.
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def save_weights(folder: Path, model: torch.nn.Module) -> Weights:
    """Write ``model``'s tensors into ``folder``; returns the file name and checksum for the card."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensor_state(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return Weights(file=WEIGHTS_FILE, sha256=_sha256(folder / WEIGHTS_FILE))


def load_weights(folder: Path, recorded: Weights, model: torch.nn.Module) -> torch.nn.Module:
    """Verify the weights' checksum against the card's, then load them into ``model`` (every tensor
    must match)."""
    weights = folder / recorded.file
    shown = model_file(weights)
    if not weights.is_file():
        raise CheckpointError(f"the weights file {shown} is missing")
    if _sha256(weights) != recorded.sha256:
        raise CheckpointError(
            f"{shown} does not match the checksum in the model card: "
            f"the file was modified or truncated; refusing to load it"
        )
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise CheckpointError(f"{shown} is not a valid safetensors file: {exc}") from None
    expected = tensor_state(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{shown} does not fit the model its card describes "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    model.load_state_dict(state, strict=False)
    return model
