"""The model repository: ``<repo>/<name>/<version>/`` folders, published atomically.

A version is written into a hidden sibling folder and renamed into place; the rename fails if the
number is taken, so concurrent publishers never share a version. Versions are integers 1, 2, ...,
immutable once published; the newest is what a request without a version gets. Rolling back publishes
an old version's files again as the next number (its lineage says ``rollback_of``), so "newest" stays
the only rule and ``resolve`` the one place that applies it.

"Newest" is the highest *intact* version: its card reads and its weights have the checksum the card
records. A damaged or half-copied version is skipped with a warning, and the next older intact one is
served. Whether a version is intact is cached per folder and file sizes, times and inodes, so resolving
on every request hashes each version's weights once, not per call.

A publish flushes the staged files and folder to disk before the rename and the model folder after
it, so a crash or power loss never leaves a version under its final name without its bytes. The rename
happens under a lock on the model's folder (``flock``, no lock file), so a publisher can demand that
the version it started from is still the newest (``parent``): a retrain never publishes over a
rollback made while it ran.
A publish interrupted by an exception or SIGTERM removes its staging folder; one killed outright
leaves it, and the next publish removes staging folders older than :data:`STALE_SECONDS`.

Each version folder holds its weights and its model card (``config.json``, see ``operators/card.py``);
this module is the only one that reads or writes the card file.

Hidden folders beside the models hold work that is not a model: ``.training/NAME`` (per-epoch state of
an unfinished run) and ``.data/NAME`` (datasets that ``pdeserve retrain`` generated).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from pdeserve.operators.card import (
    LEGACY_FORMAT_VERSION,
    Lineage,
    ModelCard,
    card_from_legacy,
)
from pdeserve.operators.errors import CheckpointError, StaleParentError, model_file

CARD_FILE = "config.json"
LEGACY_METRICS_FILE = "metrics.json"
STAGING_PREFIX = ".staging-"
GENERATING_PREFIX = ".generating-"
STALE_SECONDS = 3600.0
"""A staging (or generating) folder untouched this long belongs to a process that was killed: the next
publish (or data pruning) removes it. Writing a version takes seconds to minutes."""

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # matched in full: "x\n" is no name


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


def fsync_path(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` once its bytes are on disk, then flush the rename itself: after
    a crash ``target`` holds the old content or the new, never a torn mix or an empty file."""
    fsync_path(source)
    os.replace(source, target)
    fsync_path(target.parent)


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder``, and ``folder`` itself, to disk."""
    for parent, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(parent) / name)
        fsync_path(Path(parent))


def _signature(folder: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Name, size, modification time and inode of each file in ``folder``: what changes when any of
    them is rewritten, truncated or replaced."""
    with os.scandir(folder) as entries:
        stats = [(e.name, e.stat()) for e in entries if e.is_file()]
    return tuple(sorted((name, s.st_size, s.st_mtime_ns, s.st_ino) for name, s in stats))


@functools.lru_cache(maxsize=4096)
def _intact(folder: Path, signature: tuple) -> bool:
    """Whether the version in ``folder`` reads and its weights match its card's checksum; a failure is
    logged once per ``signature`` (the cache key), not on every request."""
    try:
        card = read_card(folder)
        if card.weights is None:
            raise CheckpointError("its model card names no weights file")
        with open(folder / card.weights.file, "rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != card.weights.sha256:
                raise CheckpointError(f"{card.weights.file} does not match the checksum in its model card")
    except (CheckpointError, OSError) as exc:
        message = f"{Path(exc.filename or '').name}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        logger.warning(
            "%s version %s is damaged, not served as newest: %s", folder.parent.name, folder.name, message
        )
        return False
    return True


def _remove_stale(folder: Path, prefix: str, now: float) -> None:
    """Remove ``folder``'s subfolders named ``prefix*`` left by killed processes: untouched (the folder
    and its files) for :data:`STALE_SECONDS`. Change times, not modification times: a copy that keeps
    its source's modification times (``copytree``) is still new."""
    for stale in folder.glob(prefix + "*"):
        try:
            touched = max(p.stat().st_ctime for p in (stale, *stale.rglob("*")))
        except FileNotFoundError:  # its owner finished or cleaned up meanwhile
            continue
        if now - touched > STALE_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (no lock file left in it); it also excludes other
    threads, each holding its own descriptor."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit`` (so ``finally`` and ``except`` blocks clean up)
    instead of ending the process on the spot; only in the main thread (the only one that may set a
    handler) and only when nobody else handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class ModelNotFoundError(LookupError):
    """No such model or version in the repository."""


def check_name(name: str) -> str:
    """``name`` if it is a valid model name (letters, digits, ``.``, ``_``, ``-``; no path separators)."""
    if not _NAME.fullmatch(name):
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
            if p.is_dir() and _NAME.fullmatch(p.name) and self.versions(p.name)
        )

    def training_folder(self, name: str) -> Path:
        """Where an unfinished training run of ``name`` keeps its per-epoch state (not a model)."""
        return self.root / ".training" / check_name(name)

    def data_folder(self, name: str) -> Path:
        """Where retraining keeps the datasets it generated for ``name`` (named by content fingerprint)."""
        return self.root / ".data" / check_name(name)

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (damaged ones included)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return [
            str(v) for v in sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        ]

    def newest(self, name: str, versions: Sequence[str] | None = None) -> str:
        """The highest intact version of ``name`` (of ``versions``, default all), or the highest one
        when none is intact (loading it then says what is wrong). Costs a folder listing and the stat
        of the newest version's files, once each version has been checked."""
        versions = self.versions(name) if versions is None else versions
        for version in reversed(versions):
            folder = self.root / name / version
            with contextlib.suppress(FileNotFoundError):
                if _intact(folder, _signature(folder)):
                    return version
        return versions[-1]

    def resolve(self, name: str, version: str | int | None = None) -> tuple[str, Path]:
        """``(version, folder)`` of ``name`` at ``version`` (None or "" = the newest intact one)."""
        versions = self.versions(name) if _NAME.fullmatch(name) else []
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(f"unknown model {name!r}; published models: {known}")
        if version in (None, ""):
            version = self.newest(name, versions)
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

    def publish(self, name: str, write: Callable[[Path], None], parent: str | None = None) -> str:
        """Publish a new version of ``name``: ``write(folder)`` fills a staging folder that is flushed
        to disk and renamed to the next free version number. Returns the version.

        Parameters
        ----------
        name : str
            Model name.
        write : callable
            Fills the staging folder it is given (weights and card).
        parent : str, optional
            Publish only if this version is still the newest when the rename happens (checked under
            the publish lock); otherwise ``StaleParentError`` and nothing is published.
        """
        check_name(name)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder, STAGING_PREFIX, time.time())
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        try:
            with _terminate_raises():
                write(staging)
                _fsync_tree(staging)  # a full disk fails here, before the version has a name
                with _locked(folder):
                    version = self._rename(name, staging, parent)
                fsync_path(folder)
                return version
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _rename(self, name: str, staging: Path, parent: str | None) -> str:
        """Rename ``staging`` to the next version of ``name`` (under the publish lock)."""
        versions = self.versions(name)
        if parent is not None:
            newest = self.newest(name, versions) if versions else None
            if newest != parent:
                raise StaleParentError(
                    f"{name} version {newest} became the newest while a successor of version {parent} "
                    f"was made; nothing published: start again from version {newest}"
                )
        while True:
            version = str(int(versions[-1]) + 1 if versions else 1)
            try:
                os.rename(
                    staging, self.root / name / version
                )  # fails if a publisher without the lock took it
                return version
            except OSError:
                if not (self.root / name / version).exists():
                    raise
            versions = self.versions(name)

    def prune_data(self, name: str, keep: int) -> list[Path]:
        """Remove the datasets in :meth:`data_folder` that no version's lineage names, except the
        ``keep`` most recent (refused or superseded retrains), and generation scratch folders of killed
        runs. Datasets a lineage names stay: the next retrain gates on their held-out samples.
        Returns the removed files."""
        folder = self.data_folder(name)
        if not folder.is_dir():
            return []
        _remove_stale(folder, GENERATING_PREFIX, time.time())
        named = set()
        for version in self.versions(name):
            with contextlib.suppress(CheckpointError):
                lineage = read_card(self.root / name / version).lineage
                named |= {(self.root / d.path).resolve() for d in (lineage.datasets if lineage else ())}
        unnamed = [p for p in folder.glob("*.h5") if p.resolve() not in named]
        unnamed.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for path in unnamed[keep:]:
            path.unlink(missing_ok=True)
        return unnamed[keep:]

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
        newest = self.newest(name)
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
