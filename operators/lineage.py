"""Lineage: which dataset files a published version was fit on, and checking that they still are.

A lineage entry (:class:`~pdeserve.operators.card.DatasetRecord`) names the file (relative to the model
repository when inside it, absolute otherwise), its content fingerprint (``LoadedDataset.fingerprint``:
sha256 of the arrays, so re-compressing a file does not change it) and its split counts
``n_train, n_validation, n_test`` (the samples lie in that order). ``pdeserve train`` records one entry
for its ``--data`` file, a retrain one per dataset.

Versions published before lineage was recorded (like the bundled ``models/darcy-fno/1``) record only the
fingerprint and split counts of the one file they were trained on: using their data needs that file
(``data=``), whose fingerprint must match. They are not regenerated from the recorded seed: a
regenerated file need not be bit-identical (the bundled model's data differ in one float after a solver
change), and data whose identity cannot be verified cannot be trusted to hold out the same samples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pdeserve.datagen.dataset import LoadedDataset, load_dataset
from pdeserve.operators.card import DatasetRecord, Lineage, ModelCard


class LineageError(ValueError):
    """The data a model's lineage names are missing, changed, or were never recorded."""


def dataset_path(record: DatasetRecord, repo: str | os.PathLike) -> Path:
    """The file of ``record``, resolving a repository-relative path against ``repo``."""
    path = Path(record.path)
    return path if path.is_absolute() else Path(repo) / path


def dataset_record(
    path: str | os.PathLike, data: LoadedDataset, n_validation: int, n_test: int, repo: str | os.PathLike
) -> DatasetRecord:
    """The lineage entry of ``data`` (read from ``path``), split into ``n_validation`` and ``n_test``
    samples at its end; ``path`` is recorded relative to ``repo`` when it lies inside it."""
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
    card: ModelCard,
    repo: str | os.PathLike,
    command: Sequence[str],
) -> Lineage:
    """The lineage of a model that ``pdeserve train`` fitted on ``data`` (read from ``path``).

    Parameters
    ----------
    path : path
        The training file.
    data : LoadedDataset
        Its content.
    card : ModelCard
        The trained model's card (its dataset split counts).
    repo : path
        The model repository it is published to.
    command : sequence of str
        The command line, recorded as is.
    """
    record = dataset_record(path, data, card.dataset.n_validation, card.dataset.n_test, repo)
    return Lineage(mode="train", datasets=(record,), command=tuple(command))


def recorded_datasets(card: ModelCard) -> tuple[DatasetRecord, ...] | None:
    """The datasets of a model's lineage, or None for a version published before lineage was recorded."""
    if card.lineage is None or not card.lineage.datasets:
        return None
    return card.lineage.datasets


def verified_dataset(record: DatasetRecord, repo: str | os.PathLike, owner: str) -> LoadedDataset:
    """The data of ``record``, loaded; ``LineageError`` naming ``owner`` (``NAME vVERSION``) when the
    file is missing or its content fingerprint is not the recorded one."""
    path = dataset_path(record, repo)
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
    card: ModelCard, owner: str, repo: str | os.PathLike, data: str | os.PathLike | None = None
) -> list[tuple[DatasetRecord, LoadedDataset]]:
    """Every dataset a model was trained on, loaded and verified against its recorded fingerprint.

    Parameters
    ----------
    card : ModelCard
        The model's card.
    owner : str
        ``NAME vVERSION``, for error messages.
    repo : path
        The model repository (repository-relative paths resolve against it).
    data : path, optional
        For a version without recorded lineage only: the file it was trained on (its fingerprint must
        equal the card's ``dataset.fingerprint``).
    """
    records = recorded_datasets(card)
    if records is not None:
        if data is not None:
            raise LineageError(
                f"{owner} records the data it was trained on; --data is only for versions published "
                "before lineage was recorded"
            )
        return [(record, verified_dataset(record, repo, owner)) for record in records]
    return [_legacy_data(card, owner, repo, data)]


def _legacy_data(
    card: ModelCard, owner: str, repo: str | os.PathLike, data: str | os.PathLike | None
) -> tuple[DatasetRecord, LoadedDataset]:
    """The one training file of a version without lineage, checked against its card's fingerprint."""
    recorded = card.dataset
    if data is None:
        raise LineageError(
            f"{owner} was published before pdeserve recorded the files a model is trained on: pass the "
            f"file it was trained on with --data (content fingerprint {recorded.fingerprint[:16]}...)"
        )
    # Early cards did not record the validation count: it is what the other splits leave.
    n_validation = recorded.n_samples - recorded.n_train - recorded.n_test
    claimed = DatasetRecord(
        str(Path(data).resolve()), recorded.fingerprint, recorded.n_train, n_validation, recorded.n_test
    )
    loaded = verified_dataset(claimed, repo, owner)
    return dataset_record(data, loaded, n_validation, recorded.n_test, repo), loaded
