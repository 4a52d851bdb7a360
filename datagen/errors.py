"""The one exception a classical solver raises for an input it refuses.

A refusal is the input's fault, never the solver's: a non-positive or non-finite coefficient, a time step
unstable for the input's amplitude, a grid too coarse or too large for the solver, a wave speed for which
the discrete system is singular. It is a ``ValueError`` (callers that caught those keep working), and
serving answers it INVALID_ARGUMENT (serving/errors.py); any other exception out of a solver is a bug.
"""

from __future__ import annotations


class SolverRefusal(ValueError):
    """A classical solver cannot take this input; the message says why and what it accepts."""
