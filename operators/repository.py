"""The model repository: ``<repo>/<name>/<version>/`` folders, published atomically.

A version is written into a hidden sibling folder and renamed into place; the rename fails if the
number is taken, so concurrent publishers never share a version. Versions are integers 1, 2, ...,
immutable once published; the newest is what a request without a version gets. Rolling back publishes
an old version's files again as the next number (its lineage says ``rollback_of``), so "newest" stays
the only rule and ``resolve`` the one place that applies it.

Each version folder holds its weights and its model card (``config.json``, see ``operators/card.py``);
this module is the only one that reads or writes the card file.

Hidden folders beside the models hold work that is not a model: ``.training/NAME`` (per-epoch state of
an unfinished run) and ``.data/NAME`` (datasets that ``pdeserve retrain`` generated).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from pdeserve.operators.card import (
    LEGACY_FORMAT_VERSION,
    Lineage,
    ModelCard,
    card_from_legacy,
)
from pdeserve.operators.errors import CheckpointError, model_file

CARD_FILE = "config.json"
LEGACY_METRICS_FILE = "metrics.json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def read_card(folder: Path) -> ModelCard:
    """The model card of a version folder; ``CheckpointError`` when it is missing or malformed."""
    path = folder / CARD_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CheckpointError(f"{model_file(path)} is missing") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{model_file(path)} is not valid JSON: {exc}") from None
    if isinstance(document, dict) and document.get("format_version") == LEGACY_FORMAT_VERSION:
        return _legacy_card(folder, document)
    return ModelCard.from_json(text, model_file(path))


def _legacy_card(folder: Path, config: dict) -> ModelCard:
    """A version written before cards: its config, its metrics file and the parameter count of the
    network it describes (built on torch's meta device: no memory, no weights read)."""
    import torch

    from pdeserve.operators.registry import make_config

    metrics_path = folder / LEGACY_METRICS_FILE
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{model_file(metrics_path)} is not valid JSON: {exc}") from None
    card = card_from_legacy(config, metrics, model_file(folder / CARD_FILE))
    try:
        with torch.device("meta"):
            network = make_config(card.architecture, card.arguments).build()
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{model_file(folder / CARD_FILE)}: {exc}") from None
    count = sum(p.numel() * (2 if p.is_complex() else 1) for p in network.parameters())
    return card.replace(parameter_count=count)


def write_card(folder: Path, card: ModelCard) -> None:
    """Write ``card`` as the version folder's ``config.json``."""
    (folder / CARD_FILE).write_text(card.to_json())


class ModelNotFoundError(LookupError):
    """No such model or version in the repository."""


def check_name(name: str) -> str:
    """``name`` if it is a valid model name (letters, digits, ``.``, ``_``, ``-``; no path separators)."""
    if not _NAME.match(name):
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return name


class ModelRepository:
    """A folder of published models.

    Parameters
    ----------
    root : path
        The repository folder (created on first publish).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Models with at least one published version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME.match(p.name) and self.versions(p.name)
        )

    def training_folder(self, name: str) -> Path:
        """Where an unfinished training run of ``name`` keeps its per-epoch state (not a model)."""
        return self.root / ".training" / check_name(name)

    def data_folder(self, name: str) -> Path:
        """Where retraining keeps the datasets it generated for ``name`` (named by content fingerprint)."""
        return self.root / ".data" / check_name(name)

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return [
            str(v) for v in sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        ]

    def resolve(self, name: str, version: str | int | None = None) -> tuple[str, Path]:
        """``(version, folder)`` of ``name`` at ``version`` (None or "" = newest)."""
        versions = self.versions(name) if _NAME.match(name) else []
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(f"unknown model {name!r}; published models: {known}")
        if version in (None, ""):
            version = versions[-1]
        version = str(version)
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; versions: {', '.join(versions)}"
            )
        return version, self.root / name / version

    def card(self, name: str, version: str | int | None = None) -> tuple[str, ModelCard]:
        """``(version, card)`` of ``name`` at ``version`` (None or "" = newest), without loading weights."""
        version, folder = self.resolve(name, version)
        return version, read_card(folder)

    def publish(self, name: str, write: Callable[[Path], None]) -> str:
        """Publish a new version of ``name``: ``write(folder)`` fills a staging folder that is then
        renamed to the next free version number. Returns the version."""
        check_name(name)
        parent = self.root / name
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
        try:
            write(staging)
            while True:
                version = str(int(self.versions(name)[-1]) + 1 if self.versions(name) else 1)
                try:
                    os.rename(staging, parent / version)  # fails if another publisher took it
                    return version
                except OSError:
                    if not (parent / version).exists():
                        raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def rollback(self, name: str, to: str | int, command: Sequence[str] | None = None) -> str:
        """Make version ``to`` what requests without a version get: publish its files again as the
        next version, with ``lineage.rollback_of = to`` (and the version it replaces) in its card.
        Atomic like every publish; the weights are copied byte for byte, so their checksum still holds.

        Parameters
        ----------
        name : str
            Model name.
        to : str or int
            The version to return to; it must exist and not already be the newest.
        command : sequence of str, optional
            Command line recorded in the new version's lineage.

        Returns the new version.
        """
        version, source = self.resolve(name, to)
        newest = self.versions(name)[-1]
        if version == newest:
            raise ValueError(f"{name} version {version} is already the newest: nothing to roll back")
        card = read_card(source)  # refuses a damaged card before anything is published
        lineage = dataclasses.replace(
            card.lineage or Lineage(mode="rollback"),
            mode="rollback",
            rollback_of=version,
            replaces=newest,
            command=tuple(command or ()),
            published_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        return self.republish(name, version, card.replace(lineage=lineage))

    def republish(self, name: str, version: str, card: ModelCard) -> str:
        """Publish ``version``'s files again, weights byte for byte, with ``card`` as the next version
        (atomic like every publish). Returns the new version."""
        _, source = self.resolve(name, version)

        def write(folder: Path) -> None:
            shutil.copytree(source, folder, dirs_exist_ok=True)
            (folder / LEGACY_METRICS_FILE).unlink(missing_ok=True)  # the card holds the metrics now
            write_card(folder, card)

        return self.publish(name, write)
