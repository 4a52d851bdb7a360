"""Python client for ``pdeserve.v1.Solver``: numpy in, numpy out.

Light: it needs numpy, grpcio and protobuf only (``pip install "pdeserve[client]"``), never torch or
Ray, so simulation codes and notebooks can call a server without the serving stack. ``health()``
also needs grpcio-health-checking.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.protos.v1 import solver_pb2_grpc
from pdeserve.serving.tensors import from_tensor, to_tensor


class SolverError(RuntimeError):
    """A failed call: ``code`` is the gRPC status, the message its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


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
    """

    step: int
    time: float | None
    outputs: dict[str, np.ndarray]


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
        Extra attempts after UNAVAILABLE (a replica restarting, the proxy starting), with exponential
        backoff from 0.1 s; other errors are never retried.
    application : str, optional
        Serve application to route to, when one Ray cluster serves several.
    """

    def __init__(
        self,
        target: str,
        timeout: float = 60.0,
        token: str | None = None,
        retries: int = 3,
        application: str | None = None,
    ) -> None:
        options = [
            ("grpc.max_send_message_length", 1 << 30),
            ("grpc.max_receive_message_length", 1 << 30),
        ]
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
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise SolverError(exc.code(), exc.details()) from None
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    def solve_response(
        self, model: str, inputs: Mapping[str, np.ndarray], version: str = "", reference: bool = False
    ) -> pb.SolveResponse:
        """The raw ``SolveResponse`` for ``inputs`` (field name -> array)."""
        request = pb.SolveRequest(model=model, version=version, reference=reference)
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(to_tensor(array))
        return self._call(self.stub.Solve, request)

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
        self, model: str, inputs: Mapping[str, np.ndarray], steps: int, version: str = ""
    ) -> Iterator[RolloutStep]:
        """Roll a time-dependent model forward ``steps`` states from ``inputs`` (its input states by
        name, ``(*grid)`` or ``(batch, *grid)``), yielding each state as the server streams it.

        The client's deadline covers the whole stream, and a stream is never retried (it may have
        yielded states already); errors raise ``SolverError`` while iterating.
        """
        request = pb.RolloutRequest(model=model, version=version, steps=steps)
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(to_tensor(array))
        try:
            for message in self.stub.Rollout(request, timeout=self.timeout, metadata=self.metadata or None):
                yield RolloutStep(
                    step=message.step,
                    time=message.time if message.HasField("time") else None,
                    outputs={name: from_tensor(t, name) for name, t in message.outputs.items()},
                )
        except grpc.RpcError as exc:
            raise SolverError(exc.code(), exc.details()) from None

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


def _read_inputs(path: Path, info: pb.ModelInfo) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inputs to send and, for a dataset file, the outputs it holds (to compare with)."""
    names = [f.name for f in info.inputs]
    if path.suffix == ".npy":
        if len(names) != 1:
            raise ValueError(f"model {info.name} has inputs {names}: pass an .npz or a dataset file")
        return {names[0]: np.load(path, allow_pickle=False)}, {}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}, {}
    from pdeserve.datagen.dataset import load_dataset

    data = load_dataset(path)
    missing = [n for n in names if n not in data.inputs]
    if missing:
        raise ValueError(
            f"model {info.name} reads {names}; {path.name} has inputs {sorted(data.inputs)}: "
            "pass the model's inputs in an .npz"
        )
    return {n: data.inputs[n] for n in names}, data.outputs


def _write_outputs(out: Path, outputs: Mapping[str, np.ndarray]) -> None:
    if out.suffix == ".npy" and len(outputs) == 1:
        np.save(out, next(iter(outputs.values())))
    else:
        np.savez(out.with_suffix(".npz"), **outputs)
    print(f"  wrote {out}")


def _rollout_command(args: argparse.Namespace, client: SolverClient, inputs: dict[str, np.ndarray]) -> None:
    """``pdeserve solve --steps N``: stream the states, one line each; ``--out`` stacks them on a
    leading step axis."""
    states: dict[str, list[np.ndarray]] = {}
    for state in client.rollout(args.model, inputs, args.steps, args.version):
        when = f" t={state.time:g}" if state.time is not None else ""
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in state.outputs.items())
        print(f"step {state.step}{when}: {shapes}", flush=True)
        for name, array in state.outputs.items():
            states.setdefault(name, []).append(array)
    if args.out:
        _write_outputs(Path(args.out), {name: np.stack(arrays) for name, arrays in states.items()})


def solve_command(args: argparse.Namespace) -> None:
    """``pdeserve solve``."""
    from pdeserve.operators.evaluation import relative_l2

    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    if args.steps is not None and args.reference:
        raise ValueError("--reference checks a single Solve; it does not apply to --steps")
    token = os.environ.get(args.token_env, "").strip() or None
    with SolverClient(args.target, timeout=args.timeout, token=token, application=args.application) as client:
        info = client.get_model(args.model, args.version)
        inputs, truth = _read_inputs(path, info)
        if args.steps is not None:
            _rollout_command(args, client, inputs)
            return
        response = client.solve_response(args.model, inputs, args.version, reference=args.reference)
    outputs = {name: from_tensor(t, name) for name, t in response.outputs.items()}
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items())
    print(f"{response.model} v{response.version}: {shapes} in {response.inference_ms:.1f} ms")
    for name, error in response.reference_relative_l2.items():
        print(f"  relative L2 of {name} against the classical solver (server-side): {error:.4f}")
    for name, array in outputs.items():
        if name in truth and truth[name].shape == array.shape:
            batched = array.ndim == len(info.outputs[0].shape) + 1
            pred, true = (array, truth[name]) if batched else (array[None], truth[name][None])
            print(
                f"  relative L2 of {name} against {path.name}: "
                f"{relative_l2(pred[:, None], true[:, None]):.4f}"
            )
    if args.out:
        _write_outputs(Path(args.out), outputs)
