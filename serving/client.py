"""Python client for ``pdeserve.v1.Solver``: numpy in, numpy out.

Light: it needs numpy, grpcio and protobuf only (``pip install "pdeserve[client]"``), never torch or
Ray, so simulation codes and notebooks can call a server without the serving stack. ``health()``
also needs grpcio-health-checking.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc
import numpy as np

from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.protos.v1 import solver_pb2_grpc
from pdeserve.serving.tensors import from_tensor, to_tensor

# SolveRequest.method by name.
SOLVE_METHODS = {
    "auto": pb.SOLVE_METHOD_AUTO,
    "surrogate": pb.SOLVE_METHOD_SURROGATE,
    "classical": pb.SOLVE_METHOD_CLASSICAL,
}


class SolverError(RuntimeError):
    """A failed call: ``code`` is the gRPC status, the message its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


# gRPC's message for a response that carried an HTTP error status and no gRPC status: the ingress
# answered instead of the server. Ray Serve's HAProxy rewrites its 502/503/504 (the replica's connection
# lost mid-request, no server left) to 500, which gRPC would read as UNKNOWN; the gRPC mapping of those
# statuses is UNAVAILABLE, and so is this client's.
INGRESS_HTTP_ERROR = re.compile(r"Received http2 header with status: 50[0234]\b")


def call_status(exc: grpc.RpcError) -> grpc.StatusCode:
    """The status of a failed call: UNAVAILABLE where the ingress answered with an HTTP server error."""
    code = exc.code()
    if code == grpc.StatusCode.UNKNOWN and INGRESS_HTTP_ERROR.search(exc.details() or ""):
        return grpc.StatusCode.UNAVAILABLE
    return code


@dataclass(frozen=True)
class AnswerCheck:
    """The check of one sample's answer (``pdeserve.v1.AnswerCheck``).

    Parameters
    ----------
    estimated_relative_l2 : float or None
        Estimated relative L2 error of the answer; on the model's calibration distribution the true
        error is at most this with probability ``coverage``. None: the model is not calibrated, or its
        PDE has no indicator yet.
    indicator : float or None
        The PDE family's a-posteriori indicator of the answer (None: no indicator yet).
    coverage : float
        Coverage of the estimate (0 without one).
    path : str
        ``surrogate``, ``refined`` or ``classical``: what produced the answer.
    refine_iterations : int
        Iterations of the refining solver (0 when not refined).
    residual : float or None
        Relative residual of the answer in the classical solver's equations, when the request asked
        for a tolerance.
    refine_ms : float
        Milliseconds the server spent refining it.
    estimate_method : str
        ``indicator`` (the PDE family's), ``solver-free`` (the inputs' distance from the training
        inputs), ``ledger`` (the recorded error of the classical path that answered) or ``""`` without
        an estimate.
    out_of_distribution : tuple of str
        Why the sample's inputs lie outside the model's training data (empty when they do not).
    rung : str
        The classical ladder's rung that answered (``reference`` for the reference solve; ``""`` else).
    """

    estimated_relative_l2: float | None
    indicator: float | None
    coverage: float
    path: str
    refine_iterations: int
    residual: float | None
    refine_ms: float
    estimate_method: str = ""
    out_of_distribution: tuple[str, ...] = ()
    rung: str = ""

    @classmethod
    def from_message(cls, message: pb.AnswerCheck) -> AnswerCheck:
        return cls(
            estimated_relative_l2=(
                message.estimated_relative_l2 if message.HasField("estimated_relative_l2") else None
            ),
            indicator=message.indicator if message.HasField("indicator") else None,
            coverage=message.coverage,
            path=pb.AnswerPath.Name(message.path).removeprefix("ANSWER_PATH_").lower(),
            refine_iterations=message.refine_iterations,
            residual=message.residual if message.HasField("residual") else None,
            refine_ms=message.refine_ms,
            estimate_method=""
            if message.estimate_method == pb.ESTIMATE_METHOD_UNSPECIFIED
            else pb.EstimateMethod.Name(message.estimate_method)
            .removeprefix("ESTIMATE_METHOD_")
            .lower()
            .replace("_", "-"),
            out_of_distribution=tuple(message.out_of_distribution),
            rung=message.rung,
        )


@dataclass(frozen=True)
class Answer:
    """A checked ``Solve`` answer.

    Parameters
    ----------
    outputs : dict of str to ndarray
        Output fields by name, in the inputs' batch layout (float64 when a tolerance was asked for).
    checks : list of AnswerCheck
        One per sample, in the batch's order.
    grid_validated : bool
        Whether the grid lies in the model's validated range of sides.
    out_of_range_inputs : list of str
        Inputs with a value outside their range over the training samples.
    version : str
        The model version that answered.
    """

    outputs: dict[str, np.ndarray]
    checks: list[AnswerCheck]
    grid_validated: bool
    out_of_range_inputs: list[str]
    version: str

    @classmethod
    def from_response(cls, response: pb.SolveResponse) -> Answer:
        return cls(
            outputs={name: from_tensor(t, name) for name, t in response.outputs.items()},
            checks=[AnswerCheck.from_message(c) for c in response.checks],
            grid_validated=response.grid_validated,
            out_of_range_inputs=list(response.out_of_range_inputs),
            version=response.version,
        )


@dataclass(frozen=True)
class RolloutStep:
    """One streamed state of a rollout.

    Parameters
    ----------
    step : int
        0 for the first predicted state.
    time : float or None
        Model time of the state (the first input state is t = 0), None when the model does not know it.
    outputs : dict of str to ndarray
        The state by field name (e.g. ``"w"``), in the inputs' batch layout, float32.
    checks : list of AnswerCheck
        One per sample, for the forward pass that predicted the state: its error since the rollout's
        exact start, estimated up to the model's calibrated horizon (the indicator alone beyond it).
    """

    step: int
    time: float | None
    outputs: dict[str, np.ndarray]
    checks: list[AnswerCheck]


class SolverClient:
    """A connection to a pdeserve server.

    Parameters
    ----------
    target : str
        ``HOST:PORT`` of the server's gRPC port.
    timeout : float
        Deadline of each call in seconds.
    token : str, optional
        Sent as ``authorization: Bearer TOKEN`` (servers started with an auth token require it).
    retries : int
        Extra attempts after UNAVAILABLE (a replica restarting, the proxy starting, the ingress's HTTP
        server error for a request it lost: :func:`call_status`), with exponential backoff from 0.1 s;
        other errors are never retried.
    application : str, optional
        Serve application to route to, when one Ray cluster serves several.
    tls : bool
        Connect over TLS, to the TLS-terminating front of a server (an ingress or load balancer: Ray
        Serve's gRPC proxy itself speaks plain gRPC only), verifying its certificate.
    root_certificates : bytes, optional
        PEM certificates to verify the server's certificate with (a private CA, a self-signed
        certificate); None: the system's roots. Implies ``tls``.
    """

    def __init__(
        self,
        target: str,
        timeout: float = 60.0,
        token: str | None = None,
        retries: int = 3,
        application: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
    ) -> None:
        options = [
            ("grpc.max_send_message_length", 1 << 30),
            ("grpc.max_receive_message_length", 1 << 30),
        ]
        if tls or root_certificates:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = solver_pb2_grpc.SolverStub(self.channel)
        self.timeout = timeout
        self.retries = retries
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        if application:
            self.metadata.append(("application", application))

    def __enter__(self) -> SolverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout, metadata=self.metadata or None)
            except grpc.RpcError as exc:
                code = call_status(exc)
                if code != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise SolverError(code, exc.details()) from None
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    def solve_response(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: str = "",
        reference: bool = False,
        tolerance: float = 0.0,
        max_error: float = 0.0,
        method: str = "auto",
    ) -> pb.SolveResponse:
        """The raw ``SolveResponse`` for ``inputs`` (field name -> array); ``tolerance`` > 0 asks for
        answers refined to that relative residual; ``max_error`` > 0 for an answer by the cheapest path
        predicted to meet that relative L2 error, of ``method`` (``auto``, ``surrogate`` or
        ``classical``; ``checks[i].path`` and ``rung`` say which answered)."""
        request = pb.SolveRequest(
            model=model,
            version=version,
            reference=reference,
            tolerance=tolerance,
            max_error=max_error,
            method=SOLVE_METHODS[method],
        )
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(to_tensor(array))
        return self._call(self.stub.Solve, request)

    def solve_checked(
        self, model: str, inputs: Mapping[str, np.ndarray], version: str = "", tolerance: float = 0.0
    ) -> Answer:
        """Outputs of ``model`` for ``inputs`` with each sample's check; ``tolerance`` > 0 asks for
        answers whose relative residual meets it (refined on the server where needed)."""
        return Answer.from_response(self.solve_response(model, inputs, version, tolerance=tolerance))

    def solve(self, model: str, inputs: Mapping[str, np.ndarray], version: str = "") -> dict[str, np.ndarray]:
        """Outputs of ``model`` for ``inputs`` of shape ``(*grid)`` or ``(batch, *grid)``."""
        response = self.solve_response(model, inputs, version)
        return {name: from_tensor(t, name) for name, t in response.outputs.items()}

    def solve_batched(
        self, model: str, inputs: Mapping[str, np.ndarray], batch_size: int = 32, version: str = ""
    ) -> dict[str, np.ndarray]:
        """Outputs for a large batch ``(n, *grid)``, sent ``batch_size`` samples per call (bounded
        message sizes; the server batches concurrent calls on its side)."""
        n = len(next(iter(inputs.values())))
        parts = [
            self.solve(model, {k: v[lo : lo + batch_size] for k, v in inputs.items()}, version)
            for lo in range(0, n, batch_size)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def rollout(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        steps: int,
        version: str = "",
        max_estimated_error: float = 0.0,
    ) -> Iterator[RolloutStep]:
        """Roll a time-dependent model forward ``steps`` states from ``inputs`` (its input states by
        name, ``(*grid)`` or ``(batch, *grid)``), yielding each state as the server streams it. With
        ``max_estimated_error`` (> 0), a sample whose estimated error exceeds it (or has no estimate)
        continues with the classical solver's states (path ``classical``).

        The client's deadline covers the whole stream, and a stream is never retried (it may have
        yielded states already); errors raise ``SolverError`` while iterating.
        """
        request = pb.RolloutRequest(
            model=model, version=version, steps=steps, max_estimated_error=max_estimated_error
        )
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(to_tensor(array))
        try:
            for message in self.stub.Rollout(request, timeout=self.timeout, metadata=self.metadata or None):
                yield RolloutStep(
                    step=message.step,
                    time=message.time if message.HasField("time") else None,
                    outputs={name: from_tensor(t, name) for name, t in message.outputs.items()},
                    checks=[AnswerCheck.from_message(c) for c in message.checks],
                )
        except grpc.RpcError as exc:
            raise SolverError(call_status(exc), exc.details()) from None

    def list_models(self) -> list[pb.ModelInfo]:
        return list(self._call(self.stub.ListModels, pb.ListModelsRequest()).models)

    def get_model(self, name: str, version: str = "") -> pb.ModelInfo:
        return self._call(self.stub.GetModel, pb.GetModelRequest(name=name, version=version))

    def health(self, service: str = "") -> str:
        """The health status name (``SERVING``, ``NOT_SERVING``, ...)."""
        from grpc_health.v1 import (
            health_pb2,
            health_pb2_grpc,
        )  # grpcio-health-checking, beyond the light client

        stub = health_pb2_grpc.HealthStub(self.channel)
        response = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
