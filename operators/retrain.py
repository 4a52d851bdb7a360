"""Retraining a published model: generate more data, fine-tune, gate on the old held-out sets, publish.

``pdeserve retrain --repo DIR --model NAME`` (also ``pdeserve datagen retrain``) runs :func:`retrain`:

1. Load the newest version of NAME (the parent) and the datasets its lineage records; every file must
   exist and still have its recorded content fingerprint, or the retrain stops with one clear error.
2. Generate N new samples with the parent's PDE and parameters (any of them overridable, e.g.
   ``--viscosity``) at its training resolution, into ``<repo>/.data/NAME/<fingerprint>.h5``, so that a
   later retrain finds them. The seed defaults to one above the highest seed in the lineage, so the new
   samples are new (sample ``i`` of seed ``s`` is drawn from ``SeedSequence([s, i])``).
3. Fine-tune the parent's weights (keeping its normalisers) on old + new training samples, or train
   from scratch with ``from_scratch``. Each dataset keeps its own train / validation / test split:
   the old ones the split recorded when they entered the lineage, the new one the parent's fractions.
   So an old held-out set is never trained on.
4. Evaluate parent and candidate on the held-out set of every dataset (relative L2, mean over samples).
5. Gate: if on any *old* held-out set ``(candidate - parent) / parent > max_regression`` the candidate
   is refused and nothing is published (the CLI prints one line per set and exits with
   :data:`EXIT_REFUSED`). The new set is reported but does not gate: the parent never saw its
   distribution, so it is the set the retrain is meant to improve.
6. Otherwise publish the next version, with a ``lineage`` in its card: ``mode`` (``fine-tune`` or
   ``from-scratch``), ``parent`` version and weights checksum, ``datasets`` (every file the weights were
   fit on), ``gate`` (both numbers per held-out set), ``command``.

What a lineage records, and why a version published before lineage needs ``--data``, is in
``operators/lineage.py``.

Concurrent retrains of one model are safe: each generates into its own temporary folder and moves the
file to its content-addressed name, and a candidate is published only if its parent is still the
newest version (checked under the repository's publish lock): a retrain that finds another version
newest, published or rolled back to while it ran, publishes nothing and fails with
``StaleParentError`` naming that version, to be started again from it.
A refused candidate publishes nothing; its generated data stay in ``.data`` (another retrain may be
using the same content-addressed file). After a publish, ``.data/NAME`` keeps every dataset a lineage
names and the ``keep_data`` newest of the others (``ModelRepository.prune_data``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pdeserve.datagen.dataset import GenerationRequest, LoadedDataset, load_dataset, write_dataset
from pdeserve.datagen.families import PdeFamily
from pdeserve.operators.card import DatasetRecord, Gate, HeldOut, Lineage
from pdeserve.operators.family import family_of
from pdeserve.operators.lineage import dataset_record, lineage_data
from pdeserve.operators.settings import TrainingSettings

if TYPE_CHECKING:
    from pdeserve.operators.surrogate import Surrogate

EXIT_REFUSED = 3
"""Exit status of ``pdeserve retrain`` when the gate refuses the candidate (1 is an error,
2 a usage error)."""

FINE_TUNE_LR_FACTOR = 0.1
"""Fine-tuning starts at this fraction of the parent's learning rate (unless one is given): large steps
would first undo what the parent learnt."""


def generation_parameters(
    family: PdeFamily, recorded: Mapping[str, Any], overrides: Mapping[str, Any]
) -> Any:
    """The family's parameters: the recorded ones with ``overrides`` applied; an override the family
    does not have is an error naming the ones it has."""
    known = [f.name for f in fields(family.parameters)]
    foreign = sorted(set(overrides) - set(known))
    if foreign:
        options = ", ".join("--" + k.replace("_", "-") for k in known)
        raise ValueError(
            f"{', '.join('--' + k.replace('_', '-') for k in foreign)} does not apply to {family.name} "
            f"models; {family.name} options: {options}"
        )
    return family.parameters_from({**recorded, **overrides})


def generate(
    request: GenerationRequest,
    folder: Path,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> tuple[Path, LoadedDataset]:
    """Generate ``request`` into ``folder/<fingerprint>.h5`` (through a private temporary folder, so
    concurrent retrains never write one file) and return the path and the data."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".generating-", dir=folder))
    try:
        written = write_dataset(
            request, scratch / "new.h5", workers=workers, ray_address=ray_address, progress=progress
        )
        data = load_dataset(written)
        path = folder / f"{data.fingerprint()}.h5"
        os.replace(written, path)  # same content, same name: a concurrent twin replaces it harmlessly
        return path, data
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def combine(
    datasets: Sequence[tuple[DatasetRecord, LoadedDataset]], attrs: Mapping[str, Any]
) -> tuple[LoadedDataset, tuple[slice, slice, slice]]:
    """One dataset of every training sample, then every validation sample, then every held-out sample
    of ``datasets`` (each split as its record says), with ``attrs``; and the three slices."""
    first = datasets[0][1]
    layout = {k: v.shape[1:] for k, v in {**first.inputs, **first.outputs}.items()}
    for record, data in datasets[1:]:
        found = {k: v.shape[1:] for k, v in {**data.inputs, **data.outputs}.items()}
        if found != layout:
            raise ValueError(
                f"{record.path} holds fields {found}, the model's other data {layout}: "
                "datasets of one model must share fields, grid and time axis"
            )
    order = [(data, record.parts()[i]) for i in range(3) for record, data in datasets]

    def stack(group: str) -> dict[str, np.ndarray]:
        names = getattr(first, group)
        return {k: np.concatenate([getattr(d, group)[k][part] for d, part in order]) for k in names}

    counts = [sum(r.parts()[i].stop - r.parts()[i].start for r, _ in datasets) for i in range(3)]
    bounds = np.cumsum([0, *counts])
    splits = tuple(slice(int(bounds[i]), int(bounds[i + 1])) for i in range(3))
    return LoadedDataset(dict(attrs), stack("inputs"), stack("outputs")), splits


@dataclass(frozen=True)
class RetrainOptions:
    """What ``retrain`` does.

    Parameters
    ----------
    repo : path
        Model repository.
    name : str
        Model to retrain (from its newest version).
    n : int
        New samples to generate.
    overrides : mapping
        PDE parameters replacing the recorded ones for the new data (e.g. ``{"viscosity": 0.05}``).
    epochs : int
        Training epochs of the candidate.
    learning_rate : float, optional
        Default: the parent's, times ``FINE_TUNE_LR_FACTOR`` when fine-tuning.
    from_scratch : bool
        Train a fresh model (same architecture and arguments) instead of fine-tuning the parent.
    max_regression : float
        Largest accepted relative increase of the error on any old held-out set (0.02: 2%; negative
        demands an improvement).
    seed : int, optional
        Root seed of the new data (default: one above the highest seed in the lineage).
    data : path, optional
        The training file of a parent version without recorded lineage.
    workers : int
        Solver processes, or Ray workers with ``ray_address``.
    ray_address : str, optional
        Generate on Ray (``auto``, ``HOST:PORT`` or ``local``).
    device : str
        Training device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    progress : bool
        Progress bars.
    command : sequence of str
        Command line recorded in the lineage.
    validation_samples : int
        Fresh samples per grid side of the resolution sweep recorded in the card (0: no sweep).
    keep_data : int
        Generated datasets in ``.data/NAME`` that no lineage names (refused or superseded retrains)
        kept after a publish, newest first; older ones are removed.
    """

    repo: str | os.PathLike
    name: str
    n: int = 100
    overrides: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 10
    learning_rate: float | None = None
    from_scratch: bool = False
    max_regression: float = 0.02
    seed: int | None = None
    data: str | os.PathLike | None = None
    workers: int = 1
    ray_address: str | None = None
    device: str = "auto"
    progress: bool = True
    command: Sequence[str] = ()
    validation_samples: int = 4
    keep_data: int = 2


@dataclass(frozen=True)
class RetrainResult:
    """The outcome: ``version`` is None when the gate refused the candidate.

    Parameters
    ----------
    parent : str
        The version retrained.
    version : str or None
        The published version, None if refused.
    held_out : list of HeldOut
        Every held-out set, old ones first, the new one last.
    new_data : path
        The generated file.
    metrics : dict
        The candidate's training metrics.
    """

    parent: str
    version: str | None
    held_out: list[HeldOut]
    new_data: Path
    metrics: dict[str, float]


def retrain(options: RetrainOptions, log: Callable[[str], None] = lambda line: None) -> RetrainResult:
    """Generate, fine-tune (or train from scratch), gate and publish; see the module docstring.

    Parameters
    ----------
    options : RetrainOptions
        What to do.
    log : callable
        Receives one line per step (data verified, data generated, training started).
    """
    from pdeserve.operators.repository import ModelRepository
    from pdeserve.operators.surrogate import load_model
    from pdeserve.operators.training import publish, record_checks, split, train

    repo = ModelRepository(options.repo)
    parent = load_model(repo.root, options.name)
    owner = f"{options.name} v{parent.version}"
    card = parent.card
    folder = repo.data_folder(options.name)

    def regenerate(request: GenerationRequest) -> tuple[Path, LoadedDataset]:
        log(f"{owner}: generating {request.n} {request.family.name} samples again from a recorded recipe")
        return generate(
            request,
            folder,
            workers=options.workers,
            ray_address=options.ray_address,
            progress=options.progress,
        )

    old = lineage_data(card, owner, repo.root, options.data, regenerate)
    total = sum(r.n_samples for r, _ in old)
    log(f"{owner}: {total} samples in {len(old)} dataset(s) of its lineage, fingerprints verified")

    family = family_of(card)
    parameters = generation_parameters(family, card.pde_parameters, options.overrides)
    seed = options.seed
    if seed is None:
        seed = 1 + max((r.seed for r, _ in old if r.seed is not None), default=-1)
    settings = retrain_settings(card.training, options)
    # Settings and the new data's split first: a bad option must not cost a generation.
    _, new_val, new_test = split(options.n, settings.test_fraction, settings.val_fraction)
    request = GenerationRequest(family, parameters, options.n, card.training_resolution[0], seed)
    path, new = generate(
        request,
        folder,
        workers=options.workers,
        ray_address=options.ray_address,
        progress=options.progress,
    )

    new_record = dataset_record(
        path, new, new_val.stop - new_val.start, new_test.stop - new_test.start, repo.root
    )
    log(f"generated {options.n} {family.name} samples (seed {seed}) in {new_record.path}")
    datasets = [*old, (new_record, new)]
    combined, splits = combine(datasets, new.attrs)
    log(
        f"{f'training from scratch, parent {owner}' if options.from_scratch else f'fine-tuning {owner}'}: "
        f"{settings.epochs} epoch(s) at lr {settings.learning_rate:g} on {splits[0].stop} training samples "
        f"from {len(datasets)} datasets"
    )
    candidate, metrics = train(
        combined,
        card.architecture,
        dict(card.arguments),
        settings,
        progress=options.progress,
        time_map=card.time_map,
        splits=splits,
        initial=None if options.from_scratch else parent,
    )

    held_out = held_out_errors(parent, candidate, datasets, new_record)
    if any(h.regressed(options.max_regression) for h in held_out):
        return RetrainResult(parent.version, None, held_out, path, metrics)
    # A retrained version promises what a trained one does: its sweep, calibration and input ranges.
    candidate.card = record_checks(candidate, combined, options.validation_samples, seed).replace(
        lineage=Lineage(
            mode="from-scratch" if options.from_scratch else "fine-tune",
            datasets=tuple(record for record, _ in datasets),
            command=tuple(options.command),
            parent=parent.version,
            parent_weights_sha256=card.weights.sha256 if card.weights else None,
            gate=Gate(options.max_regression, tuple(held_out)),
        )
    )
    version = publish(repo.root, options.name, candidate, parent=parent.version)
    repo.prune_data(options.name, options.keep_data)
    return RetrainResult(parent.version, version, held_out, path, metrics)


def retrain_settings(recorded: TrainingSettings, options: RetrainOptions) -> TrainingSettings:
    """The parent's settings with the retrain's epochs and device, and its learning rate unless one is
    given: the parent's own from scratch, ``FINE_TUNE_LR_FACTOR`` of it when fine-tuning."""
    factor = 1.0 if options.from_scratch else FINE_TUNE_LR_FACTOR
    return replace(
        recorded,
        epochs=options.epochs,
        learning_rate=options.learning_rate or recorded.learning_rate * factor,
        device=options.device,
    )


def held_out_errors(
    parent: Surrogate,
    candidate: Surrogate,
    datasets: Sequence[tuple[DatasetRecord, LoadedDataset]],
    new: DatasetRecord,
) -> list[HeldOut]:
    """Parent and candidate on the held-out samples of each of ``datasets`` (``new``: the new data's)."""
    from pdeserve.operators.evaluation import evaluate
    from pdeserve.operators.training import subset

    held_out = []
    for record, data in datasets:
        test = subset(data, record.parts()[2])
        held_out.append(
            HeldOut(
                path=record.path,
                fingerprint=record.fingerprint,
                n_samples=record.n_test,
                parent=evaluate(parent, test)["relative_l2"],
                candidate=evaluate(candidate, test)["relative_l2"],
                new=record is new,
            )
        )
    return held_out
