"""Neural operators: the model registry, training, evaluation, checkpoints and the model repository.

``load_model(repo, name, version=None)`` loads a published model for use outside the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdeserve.operators.surrogate import InvalidInputError, Surrogate, load_model

__all__ = ["InvalidInputError", "Surrogate", "load_model"]


def __getattr__(name: str) -> Any:
    # Lazy, so that light modules (the CLI's argument parsing) do not import torch.
    if name in __all__:
        from pdeserve.operators import surrogate

        return getattr(surrogate, name)
    raise AttributeError(f"module 'pdeserve.operators' has no attribute {name!r}")
