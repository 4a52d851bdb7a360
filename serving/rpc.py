"""The one wrapper every RPC goes through: authentication, the status of a failure, and the metrics.

A handler is ``async (self, request, call: Call) -> response`` (or an async generator of messages for
a server-streaming RPC) and does its RPC's work only. :func:`rpc` or :func:`streaming_rpc` make it the
method Ray Serve calls with ``(request, grpc_context)``: the wrapper checks the token, turns whatever
the handler raised into its gRPC status (serving/errors.py) and answers with the RPC's empty response,
and counts an inference RPC in pdeserve's metrics (serving/metrics.py), whatever its outcome.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

from pdeserve.serving.errors import (
    MAX_DETAILS_CHARS,
    InvalidArgument,
    RequestError,
    Unauthenticated,
    as_request_error,
    cut,
    shown,
)
from pdeserve.serving.metrics import Metrics, model_labels

# A request's model name and version, matched in full (``$`` alone would let a trailing newline pass):
# a name as the repository publishes it, a version as a number.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION = re.compile(r"[0-9]{1,18}")


class Servicer(Protocol):
    """What the wrapper needs of the deployment whose methods it wraps."""

    auth_token: str  # "" when calls need no token
    metrics: Metrics
    response_types: dict[str, type[Message]]  # by method name, see response_types()

    def published(self, name: str) -> Sequence[str]:
        """The published versions of ``name`` (none for a name the repository lacks), from a cached
        listing: the event loop never lists the repository."""


@dataclass
class Call:
    """One RPC in progress, as its handler sees it.

    Parameters
    ----------
    method : str
        The RPC's name (``Solve``).
    started : float
        ``time.perf_counter()`` when the request entered the replica: ``inference_ms`` and the latency
        metric count from here.
    model, version : str
        For an inference RPC, the model and version the request names; the handler replaces the
        version by the one that serves it, which the metrics record. Empty for other RPCs.
    counted : bool
        Whether the RPC is an inference request, counted in pdeserve's metrics.
    forward_ms : float
        Milliseconds from ``started`` until the forward pass's outputs were ready (``inference_ms``).
    """

    method: str
    started: float
    model: str = ""
    version: str = ""
    counted: bool = False
    forward_ms: float = 0.0

    @classmethod
    def enter(cls, method: str, request: Message, model_fields: tuple[str, str] | None) -> Call:
        """The call of ``request`` to ``method``; ``model_fields`` name the request's model and version
        fields for an inference RPC, None for others."""
        if model_fields is None:
            return cls(method, time.perf_counter())
        model, version = (getattr(request, field) for field in model_fields)
        return cls(method, time.perf_counter(), model, version, counted=True)

    def check_names(self) -> None:
        """``InvalidArgument`` unless the model name and version of an inference RPC are well formed
        (an empty name is refused later, with the field it came from)."""
        if self.model and not MODEL_NAME.fullmatch(self.model):
            raise InvalidArgument(
                f"model name {shown(self.model)} is invalid: use up to 128 letters, digits, '.', '_' and "
                "'-', starting with a letter or digit (ListModels lists the models)"
            )
        if self.version and not VERSION.fullmatch(self.version):
            raise InvalidArgument(
                f"version {shown(self.version)} is invalid: a version is a number (empty for the newest)"
            )

    def finish(self, servicer: Servicer, code: grpc.StatusCode) -> None:
        """Count a finished inference RPC in the metrics, whatever its outcome, labelled with the model
        and version only where the repository publishes them (clients choose these strings)."""
        if self.counted:
            model, version = model_labels(self.model, self.version, servicer.published(self.model))
            servicer.metrics.request(self.method, model, version, code, self.started)


def response_types(*files: FileDescriptor) -> dict[str, type[Message]]:
    """The response type of every RPC of the services in ``files``, by method name."""
    return {
        method.name: message_factory.GetMessageClass(method.output_type)
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    }


def authorize(servicer: Servicer, grpc_context) -> None:
    """``Unauthenticated`` unless the call carries the servicer's token (``Bearer TOKEN`` or ``TOKEN``
    in ``authorization``)."""
    token = servicer.auth_token
    if not token:
        return
    metadata = dict(grpc_context.invocation_metadata() or [])
    given = metadata.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthenticated("missing or wrong token in 'authorization'")


def _refuse(grpc_context, exc: Exception, call: Call) -> RequestError:
    """Set the status ``exc`` answers with on the call and return it."""
    error = as_request_error(exc, call.method)
    grpc_context.set_code(error.code)
    grpc_context.set_details(cut(str(error), MAX_DETAILS_CHARS))
    return error


def _as_serve_method(wrapper: Callable, handler: Callable) -> Callable:
    # Named after the handler, but without functools.wraps: Serve passes ``grpc_context`` only to a
    # method whose signature names it, and wraps' __wrapped__ would show it the handler's instead.
    wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = (
        handler.__name__,
        handler.__qualname__,
        handler.__doc__,
    )
    return wrapper


def rpc(*, auth: bool = True, model_fields: tuple[str, str] | None = None) -> Callable:
    """Make a unary handler the method Serve calls (see the module docstring). ``auth`` False: the call
    needs no token (probes); ``model_fields``: the request's model and version fields, for an
    inference RPC that the metrics count."""

    def decorate(handler: Callable[..., Awaitable[Message]]) -> Callable:
        async def serve_method(self: Servicer, request: Message, grpc_context) -> Message:
            call = Call.enter(handler.__name__, request, model_fields)
            try:
                if auth:
                    authorize(self, grpc_context)
                call.check_names()
                response = await handler(self, request, call)
            except asyncio.CancelledError:  # the client went away
                call.finish(self, grpc.StatusCode.CANCELLED)
                raise
            except Exception as exc:  # every failure gets its status; the replica keeps serving
                call.finish(self, _refuse(grpc_context, exc, call).code)
                return self.response_types[call.method]()
            call.finish(self, grpc.StatusCode.OK)
            return response

        return _as_serve_method(serve_method, handler)

    return decorate


def streaming_rpc(*, model_fields: tuple[str, str]) -> Callable:
    """:func:`rpc` for a server-streaming inference handler (an async generator of messages)."""

    def decorate(handler: Callable[..., AsyncIterator[Message]]) -> Callable:
        async def serve_method(self: Servicer, request: Message, grpc_context) -> AsyncIterator[Message]:
            call = Call.enter(handler.__name__, request, model_fields)
            try:
                authorize(self, grpc_context)
                call.check_names()
                async for message in handler(self, request, call):
                    yield message
            except asyncio.CancelledError:  # the client went away (or stopped reading) mid-stream
                call.finish(self, grpc.StatusCode.CANCELLED)
                raise
            except Exception as exc:
                error = _refuse(grpc_context, exc, call)
                call.finish(self, error.code)
                # Unlike a unary answer, a stream's status reaches the client only if the generator
                # raises: Serve then sends the code set on grpc_context (ray-project/ray#58851).
                raise error from None
            call.finish(self, grpc.StatusCode.OK)

        return _as_serve_method(serve_method, handler)

    return decorate
