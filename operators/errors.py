"""Errors the operators raise for bad inputs or damaged models (importable without torch or numpy).

Serving maps each to a gRPC status (``serving/errors.py``); the CLI prints its message on one line.
"""

from __future__ import annotations

from pathlib import PurePath


def model_file(path: PurePath) -> str:
    """``NAME/VERSION/FILE`` of a file in a model repository: what messages name, since they may reach
    clients of the server, who must learn nothing about its filesystem."""
    return "/".join(PurePath(path).parts[-3:])


class InvalidInputError(ValueError):
    """Inputs that do not fit the model (names, rank, shape, dtype, non-finite values)."""


class CheckpointError(ValueError):
    """A model card or checkpoint that is missing, malformed, tampered with or does not fit its model."""


class StaleParentError(RuntimeError):
    """A publish that required its parent to still be the newest version found another one newest
    (a rollback or another publish happened meanwhile); nothing was published."""


class FamilyUnavailableError(Exception):
    """A model's PDE family cannot be used here: the distribution that registers it is not installed,
    or the model was trained on imported data and has no solver. The model itself still answers; what
    needs the family's solver is refused. Not a ``ValueError``: it is no fault of the request's inputs."""
