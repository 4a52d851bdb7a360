"""Errors the operators raise for bad inputs or damaged models (importable without torch or numpy).

Serving maps each to a gRPC status (``serving/errors.py``); the CLI prints its message on one line.
"""

from __future__ import annotations


class InvalidInputError(ValueError):
    """Inputs that do not fit the model (names, rank, shape, dtype, non-finite values)."""


class CheckpointError(ValueError):
    """A model card or checkpoint that is missing, malformed, tampered with or does not fit its model."""
