"""The model repository: ``<repo>/<name>/<version>/`` folders, published atomically.

A version is written into a hidden sibling folder and renamed into place; the rename fails if the
number is taken, so concurrent publishers never share a version. Versions are integers 1, 2, ...
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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
            raise ModelNotFoundError(f"unknown model {name!r} in {self.root}; published models: {known}")
        if version in (None, ""):
            version = versions[-1]
        version = str(version)
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; versions: {', '.join(versions)}"
            )
        return version, self.root / name / version

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
