"""Resumable training state: model, optimiser, schedule, loss scaler and shuffling RNG, every epoch.

Saved as safetensors (every tensor, flattened to dotted keys) plus JSON (everything else), written
beside and renamed, so a run killed at any moment resumes from its last finished epoch and nothing
is ever unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pdeserve.operators.checkpoint import tensor_state

WEIGHTS, STATE = "state.safetensors", "state.json"


@dataclass
class TrainingState:
    """Everything a resumed run needs besides the data.

    Parameters
    ----------
    epoch : int
        Epochs finished.
    history : list of dict
        Per-epoch ``{"epoch", "train_loss", "val_relative_l2", "learning_rate", "seconds"}``.
    best_val : float
        Lowest validation error so far (``inf`` without a validation split).
    best_epoch : int
        Epoch that reached it.
    identity : dict
        What the run trains (architecture, arguments, dataset fingerprint, settings); a checkpoint of
        another run is refused.
    """

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float = float("inf")
    best_epoch: int = 0
    identity: dict[str, Any] = field(default_factory=dict)


def _flatten(prefix: str, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested state dict into ``tensors``; return the JSON-ready remainder."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        return {"__dict__": [[k, _flatten(f"{prefix}.{k}", v, tensors)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_flatten(f"{prefix}.{i}", v, tensors) for i, v in enumerate(value)]
    return value


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if isinstance(value, dict) and "__dict__" in value:
        # Keys keep their type (optimiser state is keyed by int).
        return {k: _unflatten(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def save_state(folder: Path, state: TrainingState, components: dict[str, Any]) -> None:
    """Write ``state`` and each component's ``state_dict()`` (model, optimizer, ...) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    documents = {name: _flatten(name, obj.state_dict(), tensors) for name, obj in components.items()}
    record = {"state": state.__dict__, "components": documents}
    for name, write in (
        (WEIGHTS, lambda path: save_file(tensors, str(path))),
        (STATE, lambda path: path.write_text(json.dumps(record, allow_nan=True))),
    ):
        partial = folder / (name + ".partial")
        write(partial)
        os.replace(partial, folder / name)


def load_state(folder: Path, components: dict[str, Any]) -> TrainingState | None:
    """Restore ``components`` from ``folder``; None when it holds no checkpoint."""
    if not (folder / STATE).is_file() or not (folder / WEIGHTS).is_file():
        return None
    record = json.loads((folder / STATE).read_text())
    tensors = load_file(str(folder / WEIGHTS))
    for name, obj in components.items():
        obj.load_state_dict(_unflatten(record["components"][name], tensors))
    return TrainingState(**record["state"])


def read_identity(folder: Path) -> dict[str, Any] | None:
    """The identity recorded in ``folder``'s checkpoint, without loading tensors."""
    path = folder / STATE
    return json.loads(path.read_text())["state"]["identity"] if path.is_file() else None


class ModelState:
    """Adapter storing a model's tensors only (neuraloperator keeps non-tensor metadata in its state)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return tensor_state(self.model)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=False)


class GeneratorState:
    """Adapter giving a ``torch.Generator`` the ``state_dict`` interface the other components have."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])
