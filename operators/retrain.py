"""Retraining a published model: generate more data, fine-tune, gate on the old held-out sets, publish.

``pdeserve datagen retrain --repo DIR --model NAME`` runs :func:`retrain`:

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
6. Otherwise publish the next version, with ``lineage`` in its config: ``mode`` (``fine-tune`` or
   ``from-scratch``), ``parent`` version and weights checksum, ``datasets`` (every file the weights were
   fit on), ``gate`` (both numbers per held-out set), ``command``.

Lineage entries. ``pdeserve train`` records one entry for its ``--data`` file, retrain one per dataset.
An entry names the file (relative to the repository when inside it, absolute otherwise), its content
fingerprint (``LoadedDataset.fingerprint``: sha256 of the arrays, so re-compressing a file does not
change it) and its split counts ``n_train, n_validation, n_test`` (the samples lie in that order).

Versions published before lineage was recorded (like the bundled ``models/darcy-fno/1``) record only
the fingerprint and split counts of the one file they were trained on. Retraining them needs
``--data FILE`` with that fingerprint. They are not regenerated from the recorded seed: a regenerated
file need not be bit-identical (the bundled model's data differ in one float after a solver change), and
data whose identity cannot be verified cannot be trusted to hold out the same samples.

Concurrent retrains of one model are safe: each generates into its own temporary folder and moves the
file to its content-addressed name, and ``ModelRepository.publish`` gives each its own version number
(both parents are the version that was newest when each started; the later number becomes the newest).
A refused candidate publishes nothing; its generated data stay in ``.data`` (another retrain may be
using the same content-addressed file).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pdeserve.datagen.dataset import GenerationRequest, LoadedDataset, load_dataset, write_dataset
from pdeserve.datagen.families import PdeFamily, get_family

EXIT_REFUSED = 3
"""Exit status of ``pdeserve datagen retrain`` when the gate refuses the candidate (1 is an error,
2 a usage error)."""

FINE_TUNE_LR_FACTOR = 0.1
"""Fine-tuning starts at this fraction of the parent's learning rate (unless one is given): large steps
would first undo what the parent learnt."""


class LineageError(ValueError):
    """The data a model's lineage names are missing, changed, or were never recorded."""


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset in a model's lineage.

    Parameters
    ----------
    path : str
        The HDF5 file: relative to the model repository when inside it, absolute otherwise.
    fingerprint : str
        ``LoadedDataset.fingerprint()`` of its content.
    n_train, n_validation, n_test : int
        How its samples were split, in this order (the test samples are the held-out set).
    seed : int or None
        The root seed it was generated with, when recorded.
    """

    path: str
    fingerprint: str
    n_train: int
    n_validation: int
    n_test: int
    seed: int | None = None

    @property
    def n_samples(self) -> int:
        return self.n_train + self.n_validation + self.n_test

    def parts(self) -> tuple[slice, slice, slice]:
        """Train, validation and test slices of the file's samples."""
        a, b = self.n_train, self.n_train + self.n_validation
        return slice(0, a), slice(a, b), slice(b, self.n_samples)

    def location(self, repo: Path) -> Path:
        """The file, resolving a repository-relative path against ``repo``."""
        return Path(self.path) if Path(self.path).is_absolute() else repo / self.path


def dataset_record(
    path: str | os.PathLike, data: LoadedDataset, n_validation: int, n_test: int, repo: str | os.PathLike
) -> DatasetRecord:
    """The lineage entry of ``data`` (read from ``path``), split into ``n_validation`` and ``n_test``
    samples at its end."""
    location, root = Path(path).resolve(), Path(repo).resolve()
    shown = location.relative_to(root) if location.is_relative_to(root) else location
    seed = data.attrs.get("seed")
    return DatasetRecord(
        path=str(shown),
        fingerprint=data.fingerprint(),
        n_train=data.n_samples - n_validation - n_test,
        n_validation=n_validation,
        n_test=n_test,
        seed=None if seed is None else int(seed),
    )


def train_lineage(
    path: str | os.PathLike,
    data: LoadedDataset,
    config: Mapping[str, Any],
    repo: str | os.PathLike,
    command: Sequence[str],
) -> dict[str, Any]:
    """The ``lineage`` of a model that ``pdeserve train`` fitted on ``data`` (read from ``path``);
    ``config`` is the trained model's config (its ``dataset`` split counts)."""
    split = config["dataset"]
    record = dataset_record(path, data, split["n_validation"], split["n_test"], repo)
    return {"mode": "train", "parent": None, "datasets": [asdict(record)], "command": list(command)}


def recorded_datasets(config: Mapping[str, Any]) -> list[DatasetRecord] | None:
    """The datasets of a model's lineage, or None for a version published before lineage was recorded."""
    lineage = config.get("lineage") or {}
    if "datasets" not in lineage:
        return None
    return [DatasetRecord(**entry) for entry in lineage["datasets"]]


def _verified(record: DatasetRecord, repo: Path, owner: str) -> LoadedDataset:
    path = record.location(repo)
    if not path.is_file():
        raise LineageError(
            f"{owner} was trained on {path}, which is missing; restore it (content fingerprint "
            f"{record.fingerprint[:16]}...) before retraining"
        )
    data = load_dataset(path)
    found = data.fingerprint()
    if found != record.fingerprint:
        raise LineageError(
            f"{path} is not the data {owner} was trained on (content fingerprint {found[:16]}..., "
            f"recorded {record.fingerprint[:16]}...): if the file was changed, restore the original"
        )
    return data


def lineage_data(
    config: Mapping[str, Any], owner: str, repo: str | os.PathLike, data: str | os.PathLike | None = None
) -> list[tuple[DatasetRecord, LoadedDataset]]:
    """Every dataset a model was trained on, loaded and verified against its recorded fingerprint.

    Parameters
    ----------
    config : mapping
        The model's config.
    owner : str
        ``NAME vVERSION``, for error messages.
    repo : path
        The model repository (repository-relative paths resolve against it).
    data : path, optional
        For a version without recorded lineage only: the file it was trained on (its fingerprint must
        equal the config's ``dataset.fingerprint``).
    """
    repo = Path(repo)
    records = recorded_datasets(config)
    if records is not None:
        if data is not None:
            raise LineageError(
                f"{owner} records the data it was trained on; --data is only for versions published "
                "before lineage was recorded"
            )
        return [(record, _verified(record, repo, owner)) for record in records]
    recorded = config["dataset"]
    if data is None:
        raise LineageError(
            f"{owner} was published before pdeserve recorded the files a model is trained on: pass the "
            f"file it was trained on with --data (content fingerprint {recorded['fingerprint'][:16]}...)"
        )
    n_validation = recorded.get(
        "n_validation", recorded["n_samples"] - recorded["n_train"] - recorded["n_test"]
    )
    claimed = DatasetRecord(
        str(Path(data).resolve()),
        recorded["fingerprint"],
        recorded["n_train"],
        n_validation,
        recorded["n_test"],
    )
    loaded = _verified(claimed, repo, owner)
    return [(dataset_record(data, loaded, n_validation, recorded["n_test"], repo), loaded)]


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
class HeldOut:
    """Parent and candidate on one dataset's held-out samples.

    Parameters
    ----------
    path, fingerprint : str
        The dataset (as in the lineage).
    n_samples : int
        Held-out samples.
    parent, candidate : float
        Mean relative L2 of each model on them.
    new : bool
        The set of the newly generated data (reported, not gated).
    """

    path: str
    fingerprint: str
    n_samples: int
    parent: float
    candidate: float
    new: bool

    @property
    def change(self) -> float:
        """Relative change of the error, ``(candidate - parent) / parent`` (positive = worse)."""
        if self.parent > 0:
            return (self.candidate - self.parent) / self.parent
        return 0.0 if self.candidate == 0 else math.inf

    def regressed(self, max_regression: float) -> bool:
        """Whether this old set refuses the candidate."""
        return not self.new and self.change > max_regression


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
    from pdeserve.operators.evaluation import evaluate
    from pdeserve.operators.pairs import TimeMap
    from pdeserve.operators.repository import ModelRepository
    from pdeserve.operators.settings import TrainingSettings
    from pdeserve.operators.surrogate import load_model
    from pdeserve.operators.training import publish, split, subset, train

    repo = ModelRepository(options.repo)
    parent = load_model(repo.root, options.name)
    owner = f"{options.name} v{parent.version}"
    config = parent.config
    old = lineage_data(config, owner, repo.root, options.data)
    total = sum(r.n_samples for r, _ in old)
    log(f"{owner}: {total} samples in {len(old)} dataset(s) of its lineage, fingerprints verified")

    family = get_family(config["pde"])
    parameters = generation_parameters(family, config["pde_parameters"], options.overrides)
    seed = options.seed
    if seed is None:
        seed = 1 + max((r.seed for r, _ in old if r.seed is not None), default=-1)
    recorded = config.get("training", {})
    base = {f.name: recorded[f.name] for f in fields(TrainingSettings) if f.name in recorded}
    learning_rate = options.learning_rate or base.get("learning_rate", TrainingSettings.learning_rate) * (
        1.0 if options.from_scratch else FINE_TUNE_LR_FACTOR
    )
    settings = TrainingSettings(
        **{**base, "epochs": options.epochs, "learning_rate": learning_rate, "device": options.device}
    )
    # Settings and the new data's split first: a bad option must not cost a generation.
    _, new_val, new_test = split(options.n, settings.test_fraction, settings.val_fraction)
    request = GenerationRequest(family, parameters, options.n, config["training_resolution"][0], seed)
    path, new = generate(
        request,
        repo.data_folder(options.name),
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
    mode = "from-scratch" if options.from_scratch else "fine-tune"
    log(
        f"{f'training from scratch, parent {owner}' if options.from_scratch else f'fine-tuning {owner}'}: "
        f"{settings.epochs} epoch(s) at lr {settings.learning_rate:g} on {splits[0].stop} training samples "
        f"from {len(datasets)} datasets"
    )
    time_map = config.get("time_map")
    candidate, metrics = train(
        combined,
        config["architecture"],
        config["arguments"],
        settings,
        progress=options.progress,
        time_map=TimeMap(**time_map) if time_map else None,
        splits=splits,
        initial=None if options.from_scratch else parent,
    )

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
                new=record is new_record,
            )
        )
    if any(h.regressed(options.max_regression) for h in held_out):
        return RetrainResult(parent.version, None, held_out, path, metrics)

    candidate.config["lineage"] = {
        "mode": mode,
        "parent": parent.version,
        "parent_weights_sha256": config["weights"]["sha256"],
        "datasets": [asdict(record) for record, _ in datasets],
        "gate": {
            "max_regression": options.max_regression,
            "held_out": [asdict(h) for h in held_out],
        },
        "command": list(options.command),
    }
    version = publish(repo.root, options.name, candidate)
    return RetrainResult(parent.version, version, held_out, path, metrics)
