"""Training settings: a plain dataclass, importable without torch (the CLI builds its help from it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


SCHEDULERS = ("cosine", "step", "onecycle")
LOSSES = ("l2", "h1")


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
        ``"cosine"`` (to zero over all epochs), ``"step"`` (``gamma`` every ``step_size`` epochs) or
        ``"onecycle"`` (warm up to ``learning_rate`` then anneal, per step; MgNO and Galerkin papers).
    onecycle_div : float
        The one-cycle schedule starts at ``learning_rate / onecycle_div`` (torch's ``div_factor``) and
        ends 1e4 times lower still; the Galerkin Transformer's examples use 1e4, torch's default is 25.
    grad_clip : float
        Clip the gradients' global norm to this before each step (0: no clipping; the Galerkin
        Transformer's examples clip at 0.99).
    step_size : int
        Epochs between learning-rate drops of the step schedule.
    gamma : float
        Factor of each drop of the step schedule.
    loss : str
        Training loss: ``"l2"`` (relative L2) or ``"h1"`` (relative H1, neuraloperator's ``H1Loss``).
    test_fraction : float
        Fraction of the samples held out for evaluation (the last ones).
    val_fraction : float
        Fraction of the samples (just before the test ones) held out for validation each epoch;
        0 validates on nothing and turns early stopping off.
    patience : int
        Stop after this many epochs without a better validation error and keep the best weights
        (0: never stop early).
    amp : str
        Automatic mixed precision: ``"auto"`` (on with CUDA), ``"on"`` or ``"off"``.
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
    onecycle_div: float = 25.0
    grad_clip: float = 0.0
    step_size: int = 100
    gamma: float = 0.5
    loss: str = "l2"
    test_fraction: float = 0.1
    val_fraction: float = 0.0
    patience: int = 0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.val_fraction < 1.0 - self.test_fraction:
            raise ValueError(
                f"validation fraction must be in [0, 1 - test fraction), got {self.val_fraction}"
            )
        if not (self.onecycle_div >= 1.0 and self.grad_clip >= 0.0):  # NaN fails too
            raise ValueError(
                f"onecycle div must be at least 1 and grad clip not negative, got {self.onecycle_div} "
                f"and {self.grad_clip}"
            )
        if self.patience < 0 or (self.patience and not self.val_fraction):
            raise ValueError("early stopping (--patience) needs a validation split (--val-fraction > 0)")
        for name, value, allowed in (
            ("scheduler", self.scheduler, SCHEDULERS),
            ("loss", self.loss, LOSSES),
            ("amp", self.amp, ("auto", "on", "off")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    def resolve_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is available")
        return torch.device(self.device)

    def use_amp(self, device: torch.device) -> bool:
        """Whether to train in mixed precision on ``device`` (CUDA only: CPU autocast is slower here)."""
        if self.amp == "on" and device.type != "cuda":
            raise RuntimeError("--amp on needs a CUDA device")
        return device.type == "cuda" and self.amp != "off"
