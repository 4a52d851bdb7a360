"""How a refused request ends: one exception type per gRPC status pdeserve answers with, and the one
table that gives the exceptions of the layers below (bad inputs, unknown models, damaged checkpoints)
their status.

Every RPC goes through one wrapper (serving/rpc.py), which turns whatever a handler
raised into a :class:`RequestError` with :func:`as_request_error` and sets its code and details on the
call. Anything the table does not know is a bug: INTERNAL, with a message that names no server path
(the traceback goes to the replica's log).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import grpc

from pdeserve.datagen.errors import SolverRefusal
from pdeserve.operators.errors import CheckpointError, FamilyUnavailableError, InvalidInputError
from pdeserve.operators.repository import ModelNotFoundError

logger = logging.getLogger("pdeserve")
# Longest client string echoed in a message, and longest message: a 1 MB name is not sent back.
MAX_ECHO_CHARS = 64
MAX_DETAILS_CHARS = 1024


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown(text: str) -> str:
    """A client's string as a message quotes it: its ``repr``, cut to :data:`MAX_ECHO_CHARS`."""
    return cut(repr(text), MAX_ECHO_CHARS)


class RequestError(Exception):
    """A request refused with the gRPC status ``code`` (one subclass per status); the message is the
    status details the client reads."""

    code: ClassVar[grpc.StatusCode]

    def __reduce__(self) -> tuple:
        # Ray pickles the exception a streaming handler raises to carry it to the proxy.
        return type(self), (str(self),)


class InvalidArgument(RequestError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RequestError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(RequestError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(RequestError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(RequestError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(RequestError):
    code = grpc.StatusCode.UNAUTHENTICATED


class OutOfRange(RequestError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Internal(RequestError):
    code = grpc.StatusCode.INTERNAL


class RefusedInput(InvalidArgument):
    """An input a classical solver refused (``SolverRefusal``), said as the client reads it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the classical solver of this model's PDE cannot take this input: {reason}")

    def __reduce__(self) -> tuple:
        return InvalidArgument, (str(self),)


# The known failures of the layers below, by the status they answer with (the first match wins).
KNOWN_FAILURES: dict[type[Exception], type[RequestError]] = {
    InvalidInputError: InvalidArgument,
    SolverRefusal: RefusedInput,  # the input's fault; any other failure of a solver is a bug (INTERNAL)
    ModelNotFoundError: NotFound,
    CheckpointError: FailedPrecondition,  # a damaged checkpoint is refused, never run
    FamilyUnavailableError: FailedPrecondition,  # the family's plugin is not installed, or it has no solver
}


def _out_of_memory(exc: Exception) -> bool:
    """A failed allocation: numpy's and Python's MemoryError, or torch's allocator (a RuntimeError)."""
    message = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in message or "out of memory" in message)
    )


def as_request_error(exc: Exception, method: str) -> RequestError:
    """``exc``, raised while answering ``method``, as the status the client gets: itself, the entry of
    :data:`KNOWN_FAILURES` it falls under, or :class:`Internal` for a bug (logged with its traceback)."""
    if isinstance(exc, RequestError):
        return exc
    for kind, error in KNOWN_FAILURES.items():
        if isinstance(exc, kind):
            return error(str(exc))
    if _out_of_memory(exc):  # the replica lives on; a smaller request fits
        return ResourceExhausted(
            f"{method} needs more memory than the replica has: send fewer samples or a smaller grid"
        )
    logger.error("%s failed", method, exc_info=exc)
    return Internal(
        f"{method} failed with an internal error ({type(exc).__name__}); the server log has details"
    )
