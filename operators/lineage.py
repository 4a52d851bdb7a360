"""Lineage: which dataset files a published version was fit on, and checking that they still are.

A lineage entry (:class:`~pdeserve.operators.card.DatasetRecord`) names the file by a path relative to the
model repository (``data/x.h5`` beside a ``models`` repository is ``../data/x.h5``: never an absolute path
of the machine that trained it, so a clone of the repository and its data resolves it), its content
fingerprint (``LoadedDataset.fingerprint``:
sha256 of the arrays, so re-compressing a file does not change it) and its split counts
``n_train, n_validation, n_test`` (the samples lie in that order). ``pdeserve train`` records one entry
for its ``--data`` file, a retrain one per dataset.

A record also holds the dataset's generation recipe (:class:`~pdeserve.operators.card.GenerationRecipe`,
read from the file's root attributes: family, parameters, seed, count, resolution, dtype, pdeserve
version). When the file is gone (a fresh clone holds no data), :func:`lineage_data` regenerates it from
the recipe and accepts it only if its fingerprint is the recorded one: a different solver may produce
different bits, and data whose identity cannot be verified cannot be trusted to hold out the same samples.

Versions published before lineage was recorded (like the bundled ``models/darcy-fno/1``) record only the
fingerprint and split counts of the one file they were trained on: using their data needs that file
(``data=``), whose fingerprint must match. Records written before recipes were have none: their file
must exist.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from pdeserve.datagen.dataset import GenerationRequest, LoadedDataset, load_dataset
from pdeserve.datagen.families import get_family
from pdeserve.operators.card import DatasetRecord, GenerationRecipe, Lineage, ModelCard

Regenerate = Callable[[GenerationRequest], tuple[Path, LoadedDataset]]
"""Generates a request into a file and returns the file and its data (``retrain`` writes to the
repository's ``.data`` folder)."""


class LineageError(ValueError):
    """The data a model's lineage names are missing, changed, or were never recorded."""


def dataset_path(record: DatasetRecord, repo: str | os.PathLike) -> Path:
    """The file of ``record``, resolving its repository-relative path against ``repo`` (an absolute
    path, as cards written before paths were portable hold, is taken as it is)."""
    path = Path(record.path)
    return path if path.is_absolute() else Path(repo) / path


def generation_recipe(data: LoadedDataset) -> GenerationRecipe | None:
    """The recipe of a file ``pdeserve datagen`` wrote, from its root attributes (None for data
    combined in memory or written otherwise, which lack them)."""
    attrs = data.attrs
    if not {"pde", "parameters_json", "seed", "resolution", "pdeserve_version"} <= set(attrs):
        return None
    return GenerationRecipe(
        family=str(attrs["pde"]),
        parameters=json.loads(attrs["parameters_json"]),
        seed=int(attrs["seed"]),
        n=data.n_samples,
        resolution=int(attrs["resolution"]),
        dtype=next(iter(data.inputs.values())).dtype.name,
        pdeserve_version=str(attrs["pdeserve_version"]),
    )


def generation_request(recipe: GenerationRecipe) -> GenerationRequest:
    """The ``datagen`` request that regenerates ``recipe``'s data."""
    family = get_family(recipe.family)
    return GenerationRequest(
        family,
        family.parameters_from(recipe.parameters),
        recipe.n,
        recipe.resolution,
        recipe.seed,
        recipe.dtype,
    )


def dataset_record(
    path: str | os.PathLike, data: LoadedDataset, n_validation: int, n_test: int, repo: str | os.PathLike
) -> DatasetRecord:
    """The lineage entry of ``data`` (read from ``path``), split into ``n_validation`` and ``n_test``
    samples at its end, with its generation recipe."""
    seed = data.attrs.get("seed")
    return DatasetRecord(
        path=recorded_path(path, repo),
        fingerprint=data.fingerprint(),
        n_train=data.n_samples - n_validation - n_test,
        n_validation=n_validation,
        n_test=n_test,
        seed=None if seed is None else int(seed),
        recipe=generation_recipe(data),
    )


def recorded_path(path: str | os.PathLike, repo: str | os.PathLike) -> str:
    """``path`` as a lineage records it: relative to ``repo`` (POSIX separators), wherever it lies."""
    return Path(os.path.relpath(Path(path).resolve(), Path(repo).resolve())).as_posix()


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


def regenerated_dataset(
    record: DatasetRecord, owner: str, regenerate: Regenerate
) -> tuple[Path, LoadedDataset]:
    """The file and data of ``record`` generated again from its recipe; ``LineageError`` naming
    ``owner`` when it has no recipe or the regenerated content fingerprint is not the recorded one."""
    if record.recipe is None:
        raise LineageError(
            f"{owner} was trained on {record.path}, which is missing and records no generation recipe; "
            f"restore it (content fingerprint {record.fingerprint[:16]}...) before retraining"
        )
    path, data = regenerate(generation_request(record.recipe))
    found = data.fingerprint()
    if found != record.fingerprint:
        raise LineageError(
            f"{record.path} regenerated from {owner}'s recipe has content fingerprint {found[:16]}..., "
            f"recorded {record.fingerprint[:16]}... (generated by pdeserve {record.recipe.pdeserve_version}"
            f"): restore the original file"
        )
    return path, data


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
    card: ModelCard,
    owner: str,
    repo: str | os.PathLike,
    data: str | os.PathLike | None = None,
    regenerate: Regenerate | None = None,
) -> list[tuple[DatasetRecord, LoadedDataset]]:
    """Every dataset a model was trained on, loaded (or regenerated) and verified against its recorded
    fingerprint.

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
    regenerate : callable, optional
        Generates a recorded dataset whose file is missing from its recipe (None: a missing file is an
        error); its record then names the regenerated file, so that the next retrain finds it.
    """
    records = recorded_datasets(card)
    if records is not None:
        if data is not None:
            raise LineageError(
                f"{owner} records the data it was trained on; --data is only for versions published "
                "before lineage was recorded"
            )
        return [_recorded_data(record, repo, owner, regenerate) for record in records]
    return [_legacy_data(card, owner, repo, data)]


def _recorded_data(
    record: DatasetRecord, repo: str | os.PathLike, owner: str, regenerate: Regenerate | None
) -> tuple[DatasetRecord, LoadedDataset]:
    """The file of ``record`` if it exists, else its data regenerated (and the record naming the new
    file) when ``regenerate`` is given."""
    if regenerate is None or dataset_path(record, repo).is_file():
        return record, verified_dataset(record, repo, owner)
    path, data = regenerated_dataset(record, owner, regenerate)
    return dataclasses.replace(record, path=recorded_path(path, repo)), data


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
