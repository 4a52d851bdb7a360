"""Training settings: a plain dataclass, importable without torch (the CLI builds its help from it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings.

    Parameters
    ----------
    epochs : int
        Passes over the training split.
    batch_size : int
        Samples per step.
    learning_rate, weight_decay : float
        Adam settings (the FNO paper: 1e-3 and 1e-4).
    scheduler : str
        ``"cosine"`` (to zero over all epochs) or ``"step"`` (``gamma`` every ``step_size`` epochs).
    step_size : int
        Epochs between learning-rate drops of the step schedule.
    gamma : float
        Factor of each drop of the step schedule.
    test_fraction : float
        Fraction of the samples held out for evaluation (the last ones).
    seed : int
        Seeds initialisation and shuffling.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    """

    epochs: int = 100
    batch_size: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    step_size: int = 100
    gamma: float = 0.5
    test_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test fraction must be in (0, 1), got {self.test_fraction}")
        if self.scheduler not in ("cosine", "step"):
            raise ValueError(f"scheduler must be 'cosine' or 'step', got {self.scheduler!r}")

    def resolve_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is available")
        return torch.device(self.device)
