"""Resumable training state: counters, history, best weights, and the model, optimiser, schedule, loss
scaler and shuffling RNG, every epoch.

One safetensors file holds every tensor (flattened to dotted keys) and, in its metadata, the JSON of
everything else. It is written beside, flushed to disk and renamed (then the rename flushed), so a run
killed at any moment, or a machine that loses power, resumes from its last finished epoch with all of it
from that epoch, and nothing is ever unpickled. A state file damaged otherwise (copied while written,
truncated) is refused with ``CheckpointError``, never half-loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pdeserve.operators.card import EpochRecord
from pdeserve.operators.checkpoint import tensor_state
from pdeserve.operators.errors import CheckpointError
from pdeserve.operators.repository import replace_durably

STATE = "state.safetensors"
_RECORD = "record"  # the metadata key of the JSON part


@dataclass
class TrainingState:
    """Everything a resumed run needs besides the data and the components (model, optimiser, ...).

    Parameters
    ----------
    epoch : int
        Epochs finished.
    history : list of EpochRecord
        The finished epochs.
    best_val : float
        Lowest validation error so far (``inf`` without a validation split).
    best_epoch : int
        Epoch that reached it.
    best_weights : dict of str to Tensor, optional
        The model's tensors at ``best_epoch`` (None without a validation split): what is published.
    identity : dict
        What the run trains (architecture, arguments, dataset fingerprint, settings); a checkpoint of
        another run is refused.
    """

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_val: float = float("inf")
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    identity: dict[str, Any] = field(default_factory=dict)

    def keep_best(self, model: torch.nn.Module, val: float, epoch: int) -> bool:
        """Record ``model``'s tensors as the best if ``val`` beats the best so far; whether it did."""
        if not val < self.best_val:  # NaN never improves
            return False
        self.best_val, self.best_epoch = val, epoch
        self.best_weights = snapshot(model)
        return True


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s tensors, unaffected by further training."""
    return {k: v.clone() for k, v in tensor_state(model).items()}


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
    record = {
        "state": {
            "epoch": state.epoch,
            "history": [asdict(e) for e in state.history],
            "best_val": state.best_val,
            "best_epoch": state.best_epoch,
            "identity": state.identity,
        },
        "best_weights": _flatten("best_weights", state.best_weights, tensors),
        "components": {name: _flatten(name, obj.state_dict(), tensors) for name, obj in components.items()},
    }
    partial = folder / (STATE + ".partial")
    save_file(tensors, str(partial), metadata={_RECORD: json.dumps(record, allow_nan=True)})
    replace_durably(partial, folder / STATE)


def _damaged(path: Path, reason: object) -> CheckpointError:
    return CheckpointError(
        f"the training state {path} is damaged ({reason}); remove it, or train without --resume"
    )


def _record(folder: Path) -> dict[str, Any] | None:
    path = folder / STATE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()[_RECORD])
    except (SafetensorError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise _damaged(path, exc) from None


def _state(record: dict[str, Any]) -> TrainingState:
    document = record["state"]
    return TrainingState(**{**document, "history": [EpochRecord(**e) for e in document["history"]]})


def read_state(folder: Path) -> TrainingState | None:
    """The counters, history and identity of ``folder``'s checkpoint, without loading tensors; None
    when it holds none."""
    record = _record(folder)
    return None if record is None else _state(record)


def load_state(folder: Path, components: dict[str, Any]) -> TrainingState | None:
    """Restore ``components`` from ``folder`` and return the state; None when it holds no checkpoint."""
    record = _record(folder)
    if record is None:
        return None
    try:
        tensors = load_file(str(folder / STATE))
    except SafetensorError as exc:
        raise _damaged(folder / STATE, exc) from None
    for name, obj in components.items():
        obj.load_state_dict(_unflatten(record["components"][name], tensors))
    state = _state(record)
    state.best_weights = _unflatten(record["best_weights"], tensors)
    return state


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
