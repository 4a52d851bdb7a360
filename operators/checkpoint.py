"""Checkpoints: weights in safetensors, everything else in JSON. Nothing here ever unpickles.

A checkpoint folder holds ``model.safetensors`` and ``config.json``; the config records the sha256
of the weights file, so a tampered or truncated file is refused before any tensor reaches a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, tampered with or does not fit its model."""


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


def save_checkpoint(folder: Path, model: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write ``model``'s tensors and ``config`` (plus the weights' checksum) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    save_file(tensor_state(model), str(weights), metadata={"format": "pt"})
    config = {
        **config,
        "format_version": FORMAT_VERSION,
        "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(weights)},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config(folder: Path) -> dict[str, Any]:
    """The JSON config of a checkpoint folder."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {config.get('format_version')!r}, "
            f"this pdeserve reads {FORMAT_VERSION}"
        )
    return config


def load_weights(folder: Path, config: dict[str, Any], model: torch.nn.Module) -> torch.nn.Module:
    """Verify the weights' checksum, then load them into ``model`` (every tensor must match)."""
    weights = folder / config["weights"]["file"]
    if not weights.is_file():
        raise CheckpointError(f"missing weights file {weights}")
    if _sha256(weights) != config["weights"]["sha256"]:
        raise CheckpointError(
            f"{weights} does not match the checksum in {CONFIG_FILE}: "
            f"the file was modified or truncated; refusing to load it"
        )
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise CheckpointError(f"{weights} is not a valid safetensors file: {exc}") from None
    expected = tensor_state(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights} does not fit the {config.get('architecture')} model in its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    model.load_state_dict(state, strict=False)
    return model
