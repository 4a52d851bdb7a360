"""Neural operators: the model registry, training, evaluation, checkpoints and the model repository.

``load_model(repo, name, version=None)`` loads a published model for use outside the server.
"""

from pdeserve.operators.surrogate import InvalidInputError, Surrogate, load_model

__all__ = ["InvalidInputError", "Surrogate", "load_model"]
