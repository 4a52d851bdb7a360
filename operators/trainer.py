"""The epoch loop of a prepared training run, one hook per step in the spirit of neuraloperator's
``Trainer``: ``train_one_epoch`` (``train_one_batch`` per step), ``validate``, ``checkpoint`` and
``should_stop``; ``resume`` continues a killed run from its last finished epoch.

The loss is relative L2 (or H1) on the de-normalised output; Adam with weight decay and a step, cosine or
one-cycle schedule; CUDA trains in mixed precision; under ``torchrun`` each process trains on its share
of every shuffled epoch. The best validation epoch's weights are part of the checkpointed state, so a
resumed run publishes the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from neuralop.losses import H1Loss, LpLoss

from pdeserve.operators.card import EpochRecord, ModelCard
from pdeserve.operators.distributed import Distributed
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.pairs import OperatorPairs
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.surrogate import Surrogate
from pdeserve.operators.training_state import (
    GeneratorState,
    ModelState,
    TrainingState,
    load_state,
    read_state,
    save_state,
    snapshot,
)


def make_loss(name: str, ndim: int, periodic: bool) -> Any:
    """The relative training loss ``loss(prediction, target)``: neuraloperator's LpLoss or H1Loss."""
    if name == "h1":
        flags = {k: periodic for k in ("periodic_in_x", "periodic_in_y", "periodic_in_z")}
        return H1Loss(d=ndim, reduction="mean", **flags).rel
    return LpLoss(d=ndim, p=2, reduction="mean").rel


def make_scheduler(
    settings: TrainingSettings, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The learning-rate schedule and whether it steps every batch (one-cycle) or every epoch."""
    if settings.scheduler == "onecycle":
        total = settings.epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, settings.learning_rate, total_steps=total, div_factor=settings.onecycle_div
        )
        return schedule, True
    if settings.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, settings.step_size, settings.gamma), False
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs), False


@dataclass(frozen=True)
class TrainingRun:
    """A prepared run: the operator pairs and their split, the network's config and the card.

    Parameters
    ----------
    pairs : OperatorPairs
        Every ``(x, y)`` pair of the dataset.
    parts : (slice, slice, slice)
        The train, validation and test samples of ``pairs``.
    config : architecture config
        The registry's frozen config of the network (``build()`` makes it).
    card : ModelCard
        The card of the trained model, without metrics or history yet.
    periodic : bool
        Whether the PDE's boundary is periodic (the H1 loss's derivatives wrap around).
    """

    pairs: OperatorPairs
    parts: tuple[slice, slice, slice]
    config: Any
    card: ModelCard
    periodic: bool

    def samples(self, part: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of part 0 (train), 1 (validation) or 2 (test)."""
        return self.pairs.x[self.parts[part]], self.pairs.y[self.parts[part]]

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this run (as JSON values)."""
        card = self.card
        settings = {k: v for k, v in asdict(card.training).items() if k not in ("epochs", "device")}
        identity = {
            "architecture": card.architecture,
            "arguments": card.arguments,
            "dataset": card.dataset.fingerprint,
            "time_map": None if card.time_map is None else asdict(card.time_map),
            "settings": settings,
        }
        return json.loads(json.dumps(identity))


class Trainer:
    """The epoch loop of a prepared run on one surrogate (one process of a data-parallel run).

    Parameters
    ----------
    run : TrainingRun
        The prepared run.
    surrogate : Surrogate
        The model it trains (initialised, on ``device``), with the run's normalisers.
    settings : TrainingSettings
        Optimisation settings.
    dist : Distributed
        This process's place in the run.
    device : torch.device
        Where it trains.
    checkpoint_dir : path, optional
        Folder for the per-epoch training state (and ``history.json``).
    """

    def __init__(
        self,
        run: TrainingRun,
        surrogate: Surrogate,
        settings: TrainingSettings,
        dist: Distributed,
        device: torch.device,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        self.run, self.surrogate, self.settings = run, surrogate, settings
        self.dist, self.device = dist, device
        self.folder = Path(checkpoint_dir) if checkpoint_dir else None
        self.model = dist.wrap(surrogate.model, device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        x_train, y_train = run.samples(0)
        steps_per_epoch = math.ceil(len(dist.shard(torch.arange(len(x_train)))) / settings.batch_size)
        self.scheduler, self.per_batch = make_scheduler(settings, self.optimizer, steps_per_epoch)
        self.loss = make_loss(settings.loss, len(run.card.training_resolution), run.periodic)
        self.amp = settings.use_amp(device) and _mixed_precision_works(self.model, x_train[:2], device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.x_train, self.y_train = self._tensors(x_train, y_train)
        self.x_val, self.y_val = self._tensors(*run.samples(1))
        self.components = {
            "model": ModelState(surrogate.model),
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "generator": GeneratorState(self.generator),
        }
        self.state = TrainingState(identity=run.identity())
        if len(self.x_val):
            # Until an epoch validates better, the best weights are the starting ones.
            self.state.best_weights = snapshot(surrogate.model)

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs and raw targets on the device."""
        x_t = self.surrogate.input_normalizer.transform(torch.from_numpy(x).to(self.device))
        return x_t, torch.from_numpy(y).to(self.device)

    def resume(self) -> None:
        """Continue from the checkpoint in the folder when there is one of this run."""
        recorded = read_state(self.folder)
        if recorded is not None and recorded.identity != self.state.identity:
            raise ValueError(
                f"the checkpoint in {self.folder} belongs to another run (model, data or settings "
                "differ); remove it or train without --resume"
            )
        self.state = load_state(self.folder, self.components) or self.state
        if self.state.epoch and self.dist.is_main:
            print(
                f"resuming from {self.folder} after epoch {self.state.epoch} of {self.settings.epochs}",
                file=sys.stderr,
            )

    def train_one_epoch(self, epoch: int) -> EpochRecord:
        """One pass over this process's share of the shuffled training split."""
        self.model.train()
        started, total, count = time.perf_counter(), 0.0, 0
        order = self.dist.shard(torch.randperm(len(self.x_train), generator=self.generator))
        for idx in order.split(self.settings.batch_size):
            total += self.train_one_batch(idx.to(self.device)) * len(idx)
            count += len(idx)
        if not self.per_batch:
            self.scheduler.step()
        return EpochRecord(
            epoch=epoch,
            train_loss=total / count,
            learning_rate=self.optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
        )

    def train_one_batch(self, idx: torch.Tensor) -> float:
        """One optimiser step on the training samples ``idx``; returns the loss."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(self.x_train[idx])
        # The loss in float32: relative norms of half-precision residuals lose digits fast.
        prediction = self.surrogate.output_normalizer.inverse_transform(out.float())
        loss = self.loss(prediction, self.y_train[idx])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the loss-scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.per_batch:
            self.scheduler.step()
        return loss.item()

    @torch.no_grad()
    def validate(self) -> float | None:
        """Relative L2 on the validation split (None without one)."""
        if not len(self.x_val):
            return None
        self.model.eval()
        size = self.settings.batch_size
        out = torch.cat([self.model(self.x_val[lo : lo + size]) for lo in range(0, len(self.x_val), size)])
        return relative_l2(self.surrogate.output_normalizer.inverse_transform(out.float()), self.y_val)

    def record(self, entry: EpochRecord) -> None:
        """Add a finished epoch to the state, keeping the weights when it validates best."""
        if entry.val_relative_l2 is not None:
            self.state.keep_best(self.surrogate.model, entry.val_relative_l2, entry.epoch)
        self.state.epoch = entry.epoch
        self.state.history.append(entry)

    def checkpoint(self) -> None:
        """Save the state (the main process, when there is a folder): a kill resumes from here."""
        if self.folder and self.dist.is_main:
            save_state(self.folder, self.state, self.components)
            history = [asdict(e) for e in self.state.history]
            (self.folder / "history.json").write_text(json.dumps(history, indent=1) + "\n")

    def should_stop(self) -> bool:
        """Early stopping: ``patience`` epochs without a better validation error."""
        patience = self.settings.patience
        return bool(patience) and self.state.epoch - self.state.best_epoch >= patience

    def fit(self, progress: bool = True, tensorboard_dir: str | Path | None = None) -> TrainingState:
        """Train the remaining epochs, then load the best validation epoch's weights (when there is a
        validation split) and return the state."""
        from tqdm import tqdm

        writer = _tensorboard(tensorboard_dir) if self.dist.is_main else None
        bar = tqdm(
            range(self.state.epoch, self.settings.epochs),
            initial=self.state.epoch,
            total=self.settings.epochs,
            desc=f"train {self.run.card.architecture}",
            unit="epoch",
            disable=not (progress and self.dist.is_main),
        )
        for epoch in bar:
            entry = replace(self.train_one_epoch(epoch + 1), val_relative_l2=self.validate())
            self.record(entry)
            bar.set_postfix({k: f"{v:.4f}" for k, v in _scalars(entry).items() if k != "learning_rate"})
            if writer is not None:
                for key, value in _scalars(entry).items():
                    writer.add_scalar(key, value, entry.epoch)
            self.checkpoint()
            if self.should_stop():
                if self.dist.is_main:
                    best = self.state.best_epoch
                    print(f"early stop after epoch {entry.epoch}: best validation at epoch {best}")
                break
        bar.close()
        if writer is not None:
            writer.close()
        if self.state.best_weights is not None:
            self.surrogate.model.load_state_dict(self.state.best_weights, strict=False)
        self.surrogate.model.eval()
        return self.state


def _scalars(entry: EpochRecord) -> dict[str, float]:
    """The epoch's curves: training loss, validation error (when validated) and learning rate."""
    values = {
        "train_loss": entry.train_loss,
        "val_relative_l2": entry.val_relative_l2,
        "learning_rate": entry.learning_rate,
    }
    return {k: v for k, v in values.items() if v is not None}


def _mixed_precision_works(model: torch.nn.Module, sample: np.ndarray, device: torch.device) -> bool:
    """Try one float16 forward and backward: cuFFT runs half precision on power-of-two sizes only, so
    a spectral model on another grid cannot use AMP; it then trains in float32 (and says so)."""
    try:
        with torch.autocast(device.type, dtype=torch.float16):
            model(torch.from_numpy(sample).to(device)).float().sum().backward()
        return True
    except RuntimeError as exc:
        print(
            f"mixed precision unavailable here ({str(exc).splitlines()[0]}); training in float32",
            file=sys.stderr,
        )
        return False
    finally:
        model.zero_grad(set_to_none=True)


def _tensorboard(log_dir: str | Path | None) -> Any:
    """A TensorBoard ``SummaryWriter`` for ``log_dir``, or None (no folder asked for)."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(log_dir))
