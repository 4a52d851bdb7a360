"""The Ray Serve application: one ingress deployment answering the gRPC services.

Ray Serve's gRPC proxy routes ``/pdeserve.v1.Solver/Solve`` to the method ``Solve`` of the ingress
deployment, and ``/grpc.health.v1.Health/Check`` to ``Check``. The same replica answers the Open
Inference Protocol v2 (``/inference.GRPCInferenceService/ModelInfer``, ...; see ``serving/oip.py``)
through the same validation, batching and metrics as ``Solve``, and streams ``Rollout`` (a generator
method: Serve's gRPC proxy streams what it yields).

Every RPC is a short handler wrapped by ``rpc`` (or ``streaming_rpc``, serving/rpc.py), which
authenticates the call, gives a failure its status (serving/errors.py) and counts inference requests
(serving/metrics.py). A failure sets its code on the ``grpc_context`` and answers an empty message, so
a bad request never disturbs the replica.

Concurrent ``Solve`` calls for the same model and grid are stacked into one forward pass by
``@serve.batch``, admitted by a ``BatchGate`` so that the requests arriving during a pass form the next
batch together (serving/batching.py), and every forward pass covers a bounded number of grid points;
models load through ``@serve.multiplexed`` (each replica keeps the most recently used ones).

The event loop never lists the repository: a task lists it on a thread every ``INDEX_REFRESH_S``
(``VersionIndex``) and loads each model's newest version as it appears, so a newly published version is
served without a restart, and readiness (``Check``, ``ServerReady``) says whether some model's newest
version loads now. A model whose files are damaged is refused with FAILED_PRECONDITION naming it, and
``ListModels`` leaves it out: the other models keep serving. Describing a model (``ListModels``,
``GetModel``, ``ModelMetadata``) reads its model card only, never its weights.

Work a client can trigger is bounded: grid points per request, per Rollout stream and per reference
solve, the time a stream or a reference solve may take; a stream stops when its client goes away (Serve
cancels the handler) and computes a step only when the client has taken the previous one. Serve's
``check_health`` fails when a torch job has run far longer than any bounded pass, so Serve replaces a
wedged replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from ray import serve

from pdeserve.operators import estimates
from pdeserve.operators.errors import CheckpointError, InvalidInputError
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.pairs import RolloutTimes
from pdeserve.operators.repository import ModelNotFoundError, ModelRepository
from pdeserve.operators.surrogate import Surrogate, load_surrogate
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.serving.allocator import retain_freed_memory
from pdeserve.serving.batching import BatchGate, micro_batches
from pdeserve.serving.checks import (
    ROLLOUT_TIMEOUT_S,
    Answer,
    Checker,
    SampleCheck,
    answer,
    bound_classical_work,
    calibrated_rollouts,
    classical_reference,
    requested_max_error,
    requested_tolerance,
)
from pdeserve.serving.dataplane import DataPlane, Wanted, requested_route
from pdeserve.serving.errors import DeadlineExceeded, FailedPrecondition, NotFound, ResourceExhausted
from pdeserve.serving.family import rollout_axis
from pdeserve.serving.metrics import Metrics
from pdeserve.serving.model_info import model_info
from pdeserve.serving.options import ServingOptions, replica_environment
from pdeserve.serving.router import METHODS
from pdeserve.serving.rpc import Call, response_types, rpc, streaming_rpc
from pdeserve.serving.serve_config import DEPLOYMENT_LOGGING_CONFIG
from pdeserve.serving.tensors import from_tensor, to_tensor

if TYPE_CHECKING:  # imported by the replicas only, see serving/oip.py
    from pdeserve.protos.inference import grpc_service_pb2 as oip_pb

logger = logging.getLogger("pdeserve")
T = TypeVar("T")
SERVICE_NAME = "pdeserve.v1.Solver"
# Services Check reports on ("" = the whole server).
HEALTH_SERVICES = ("", SERVICE_NAME, "inference.GRPCInferenceService")
MODELS_PER_REPLICA = 8
# Longest Rollout one request may ask for: a stream holds one of the replica's request slots until done.
MAX_ROLLOUT_STEPS = 10_000
# Most grid points (samples x points per sample) of one Solve or ModelInfer request, or of one Rollout
# step: 16 MiB of float32 per channel (forward passes split them further, serving/batching.py).
MAX_REQUEST_POINTS = 2**22
# Most steps x grid points of one Rollout stream (its time limit: serving/checks.py).
MAX_ROLLOUT_POINTS = 2**26
# Most grid points of one request's classical reference solves, and the longest they may take
# (one solve at a time per replica: they compete with the forward passes for the same cores).
MAX_REFERENCE_POINTS = 2**18  # one 512 x 512 solve
REFERENCE_TIMEOUT_S = 60.0
# How often a replica lists the repository: a newly published version is served within this.
INDEX_REFRESH_S = 1.0
METRICS_FLUSH_S = 1.0
# A torch job running longer than this is wedged (a pass covers at most MAX_PASS_POINTS grid points,
# seconds on a CPU): Serve's health check fails and Serve replaces the replica.
WEDGED_AFTER_S = 120.0


def _decode(request: pb.SolveRequest | pb.RolloutRequest) -> dict[str, np.ndarray]:
    return {name: from_tensor(tensor, name) for name, tensor in request.inputs.items()}


def _split(names: list[str], out: np.ndarray, batched: bool) -> dict[str, np.ndarray]:
    """Channels of ``(batch, channels, *grid)`` by name, without the batch axis if the caller sent none."""
    return {name: out[:, i] if batched else out[0, i] for i, name in enumerate(names)}


def _time_axis(surrogate: Surrogate) -> RolloutTimes:
    """The rollout time axis of a time-mapped model; ``FailedPrecondition`` for a steady one."""
    if surrogate.card.time_map is None:
        raise FailedPrecondition(
            f"model {surrogate.name} is not time-dependent (it maps {surrogate.input_names} to "
            f"{surrogate.output_names}); Rollout needs a model trained on trajectory data with "
            "--input-steps/--output-steps: use Solve for this one"
        )
    return rollout_axis(surrogate.card)  # from the card's channel names when the family is missing


def request_points(stacked: np.ndarray) -> int:
    """Grid points of a validated ``(batch, channels, *grid)`` request, all samples together."""
    return stacked.shape[0] * math.prod(stacked.shape[2:])


def bound_points(points: int, limit: int, what: str) -> None:
    """``ResourceExhausted`` naming ``what`` when ``points`` grid points are above ``limit``."""
    if points > limit:
        raise ResourceExhausted(
            f"{what} covers {points} grid points (samples x points per sample), above this server's "
            f"limit of {limit}; send fewer samples per request or a coarser grid"
        )


def bound_answer(stacked: np.ndarray, channels: int, limit: int) -> None:
    """``ResourceExhausted`` before any work when the answer to a validated ``(batch, channels, *grid)``
    request, ``channels`` float32 fields per sample on its grid, would be above ``limit`` bytes (the
    message limit that bounds answers as it bounds requests)."""
    size = stacked.shape[0] * channels * math.prod(stacked.shape[2:]) * np.dtype(np.float32).itemsize
    if size > limit:
        raise ResourceExhausted(
            f"the answer would hold {size} bytes ({stacked.shape[0]} samples x {channels} output fields x "
            f"{math.prod(stacked.shape[2:])} points x 4 bytes), above this server's limit of {limit}; send "
            "fewer samples per request or a coarser grid"
        )


@contextlib.contextmanager
def model_files(name: str, version: str) -> Iterator[None]:
    """Reading model ``name``'s files at ``version`` ("" = newest): a failure the layers below do not
    name (an unknown model and a damaged checkpoint they do) is FAILED_PRECONDITION naming the model and
    the kind of failure, nothing of the server's files (the log has it in full)."""
    try:
        yield
    except (ModelNotFoundError, CheckpointError):
        raise
    except Exception as exc:
        logger.error("model %s version %s is unusable", name, version or "newest", exc_info=exc)
        raise FailedPrecondition(
            f"model {name} version {version or 'newest'} cannot be used ({type(exc).__name__}: its files "
            "do not fit this server); other models are served, and the server log has details"
        ) from None


def health_problem(torch_busy_s: float, listing_stopped: bool) -> str:
    """Why a replica is unhealthy ("" if it is not).

    Parameters
    ----------
    torch_busy_s : float
        Seconds the job in progress on the torch thread has run (0 when idle).
    listing_stopped : bool
        Whether the task that lists the model repository has ended.
    """
    if torch_busy_s > WEDGED_AFTER_S:
        return f"one torch job has run for {torch_busy_s:.0f} s (limit {WEDGED_AFTER_S:g} s): wedged"
    if listing_stopped:
        return "the task that lists the model repository has stopped"
    return ""


def newest_or_highest(repository: ModelRepository, name: str, versions: tuple[str, ...]) -> str:
    """The version a request without one gets: the newest intact one, or the highest when none is
    (requests then name it and get what is wrong with it)."""
    try:
        return repository.newest(name, versions)
    except Exception as exc:  # any damage of any model's files must not stop the listing
        logger.warning("no intact version of %s: %s", name, exc)
        return versions[-1]


@dataclass(frozen=True)
class VersionIndex:
    """Published versions of every model, as one listing of the repository found them.

    Parameters
    ----------
    versions : mapping of str to tuple of str
        Versions by model name, oldest first.
    newest : mapping of str to str
        The version a request without one gets, by model name (see ``newest_or_highest``).
    """

    versions: Mapping[str, tuple[str, ...]]
    newest: Mapping[str, str]

    @classmethod
    def scan(cls, repository: ModelRepository) -> VersionIndex:
        """List ``repository`` (blocking: run it on a thread)."""
        versions = {name: tuple(repository.versions(name)) for name in repository.names()}
        return cls(versions, {name: newest_or_highest(repository, name, v) for name, v in versions.items()})

    def resolve(self, name: str, version: str) -> str | None:
        """The version that serves ``name`` at ``version`` ("" = newest); None if this listing lacks it."""
        if not version:
            return self.newest.get(name)
        return version if version in self.versions.get(name, ()) else None


class TorchThread:
    """The replica's one thread for torch calls, and how long the job it runs has been running."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pdeserve-torch")
        self._started: float | None = None

    def _timed(self, function: Callable[..., T], *args: Any) -> T:
        self._started = time.monotonic()
        try:
            return function(*args)
        finally:
            self._started = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the thread, after the jobs before it."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, function, *args)

    def busy_for(self) -> float:
        """Seconds the job in progress has run (0 when idle)."""
        started = self._started
        return 0.0 if started is None else time.monotonic() - started


# Queue bounds come from ServingOptions in build_app; no per-request access log (serving/serve_config.py).
@serve.deployment(name="SolverService", logging_config=DEPLOYMENT_LOGGING_CONFIG)
class SolverService:
    """Serves every model of a repository; a request without a version gets the newest one.

    Parameters
    ----------
    repo : str
        Absolute path of the model repository.
    options : dict
        ``ServingOptions`` fields.
    """

    async def __init__(self, repo: str, options: dict | None = None) -> None:
        retain_freed_memory()  # batched forward passes reuse their memory (serving/allocator.py)
        # Every surrogate's torch calls (loads and forward passes) run on this one thread (reference
        # solves, which may take long, keep their own): each thread that runs torch gets its own
        # OpenMP team, and two teams on the same cores slow each other's forward passes. A model load
        # therefore waits for the forward pass in progress, and the next pass for the load.
        self._torch = TorchThread()
        # Reference solves take turns on a thread of their own: they compete for the same cores.
        self._reference_pool = ThreadPoolExecutor(1, thread_name_prefix="pdeserve-reference")
        self.repository = ModelRepository(repo)
        self.options = ServingOptions(**(options or {}))
        self.auth_token = self.options.resolved_auth_token()
        self.metrics = Metrics()
        self.checker = Checker(self.repository)  # estimates and refinements, on threads of their own
        self.dataplane = DataPlane(
            self._forward, self.checker, self._reference_pool, REFERENCE_TIMEOUT_S, self.metrics
        )
        from pdeserve.serving import oip  # here, not at the top: see serving/oip.py

        self.oip = oip
        self.response_types = response_types(pb.DESCRIPTOR, oip.pb.DESCRIPTOR, health_pb2.DESCRIPTOR)
        self._infer.set_max_batch_size(self.options.max_batch_size)
        self._infer.set_batch_wait_timeout_s(self.options.batch_wait_s)
        self._gate = BatchGate(self.options.batch_hold_fraction)
        self._index = VersionIndex({}, {})
        self._newest: dict[str, tuple[str, bool]] = {}  # name -> (newest version tried, it loaded)
        await self._refresh()
        loaded = sum(ok for _, ok in self._newest.values())
        logger.info("pdeserve replica loaded %d of %d model(s) from %s", loaded, len(self._newest), repo)
        self._refresher = asyncio.get_running_loop().create_task(self._keep_refreshing())
        self._flusher = asyncio.get_running_loop().create_task(self._keep_flushing())

    async def _refresh(self) -> None:
        """List the repository (on a thread) and load each model's newest version not tried yet."""
        self._index = await asyncio.to_thread(VersionIndex.scan, self.repository)
        for name, newest in self._index.newest.items():
            if self._newest.get(name, ("",))[0] != newest:
                self._newest[name] = (newest, await self._loads(name, newest))

    async def _keep_flushing(self) -> None:
        """Hand the counters' counts to Ray every ``METRICS_FLUSH_S`` (they add up in the replica between
        flushes, serving/metrics.py), apart from the listing, which may wait on storage or a load."""
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.metrics.flush()

    def __del__(self) -> None:
        # Serve calls this when it stops the replica gracefully: the counts since the last flush.
        metrics = getattr(self, "metrics", None)  # absent when __init__ failed early
        if metrics is not None:
            metrics.flush()

    async def _keep_refreshing(self) -> None:
        while True:
            await asyncio.sleep(INDEX_REFRESH_S)
            try:
                await self._refresh()
            except Exception:  # a failed listing (a storage hiccup) keeps the last index
                logger.exception("listing the model repository failed")

    async def _loads(self, name: str, version: str) -> bool:
        """Whether version ``version`` of ``name`` loads (it stays in the replica's models if so)."""
        try:
            await self._model(name, version)
        except Exception as exc:  # serve the healthy models; requests for this one fail clearly
            logger.error("not serving %s version %s: %s", name, version, exc)
            return False
        return True

    def _ready(self) -> bool:
        """Whether some model's newest version loads: what readiness probes ask."""
        return any(ok for name, (_, ok) in self._newest.items() if name in self._index.versions)

    async def check_health(self) -> None:
        """Ray Serve's periodic replica health check: fails when a torch job is wedged (it has run far
        longer than a bounded forward pass or load) or the repository listing task died; Serve then
        replaces the replica."""
        problem = health_problem(self._torch.busy_for(), self._refresher.done())
        if problem:
            raise RuntimeError(problem)

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def _load(self, model_id: str) -> Surrogate:
        name, _, version = model_id.rpartition(":")
        started = time.perf_counter()
        surrogate = await self._torch.run(self._load_version, name, version)
        self.metrics.load_seconds.set(time.perf_counter() - started, tags={"model": name, "version": version})
        if self._newest.get(name, ("",))[0] == version:  # a newest version that failed once loads now
            self._newest[name] = (version, True)
        return surrogate

    def published(self, name: str) -> tuple[str, ...]:
        """The versions of ``name`` the last listing found (metric labels; see serving/rpc.py)."""
        return self._index.versions.get(name, ())

    def _load_version(self, name: str, version: str) -> Surrogate:
        surrogate = load_surrogate(self.repository.resolve(name, version)[1], name, version)
        surrogate.warm_up()  # the served pass's first call builds its per-grid tables: not on a request
        return surrogate

    async def _resolve(self, name: str, version: str) -> str:
        """The version serving ``name`` at ``version`` ("" = newest), from the index; one it lacks
        (published since its last listing, or unknown: ``ModelNotFoundError``) from the repository."""
        found = self._index.resolve(name, version)
        if found:
            return found
        with model_files(name, version):
            return (await asyncio.to_thread(self.repository.resolve, name, version))[0]

    async def _model(self, name: str, version: str) -> Surrogate:
        version = await self._resolve(name, version)
        with model_files(name, version):
            return await self._load(f"{name}:{version}")

    async def _describe(self, name: str, version: str) -> pb.ModelInfo:
        """``ModelInfo`` of ``name`` at ``version`` ("" = newest) from its card, without loading weights."""
        version = await self._resolve(name, version)
        with model_files(name, version):
            _, card = await asyncio.to_thread(self.repository.card, name, version)
            return model_info(name, version, card, list(self._index.versions.get(name, (version,))))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)  # set from ServingOptions in __init__
    async def _infer(self, items: list[tuple[Surrogate, np.ndarray]]) -> list[np.ndarray]:
        """``@serve.batch``'s entry: the requests it gathered, through ``_passes``."""
        return await self._passes(items)

    async def _passes(self, items: list[tuple[Surrogate, np.ndarray]]) -> list[np.ndarray]:
        """Stack requests for the same model and grid into one forward pass each."""
        groups: dict[tuple, list[int]] = {}
        for i, (surrogate, x) in enumerate(items):
            groups.setdefault((surrogate.name, surrogate.version, x.shape[1:]), []).append(i)
        results: list[np.ndarray] = [np.empty(0)] * len(items)
        for (name, version, _), members in groups.items():
            surrogate = items[members[0]][0]
            stacked = np.concatenate([items[i][1] for i in members])
            self.metrics.batch_size.observe(len(members), tags={"model": name, "version": version})
            passes = micro_batches(len(stacked), math.prod(stacked.shape[2:]))
            self.metrics.forward_passes.inc(len(passes), tags={"model": name, "version": version})
            out = np.concatenate([await self._torch.run(surrogate.forward, stacked[part]) for part in passes])
            offsets = np.cumsum([0] + [len(items[i][1]) for i in members])
            for j, i in enumerate(members):
                results[i] = out[offsets[j] : offsets[j + 1]]
        return results

    async def _forward(self, surrogate: Surrogate, x: np.ndarray) -> np.ndarray:
        """One request's forward pass, stacked with the others that enter the batcher with it. A request
        the gate admits alone skips the batcher's queue (nobody can join it); with a batch wait, the
        batcher gathers by itself (the gate would hold back whom it waits for)."""
        if self.options.batch_wait_s:
            return await self._infer((surrogate, x))

        async def enter(alone: bool) -> np.ndarray:
            if alone:
                (out,) = await self._passes([(surrogate, x)])
                return out
            return await self._infer((surrogate, x))

        return await self._gate.run(enter)

    async def _lookup(self, request: Message, call: Call, model_field: str) -> Surrogate:
        """The checks every inference request starts with, whatever its protocol: the size limit and
        the model (``model_field`` names the request field that holds it, for errors). Records the
        version that serves the call."""
        size = request.ByteSize()
        if size > self.options.max_request_bytes:
            raise ResourceExhausted(
                f"request of {size} bytes is above this server's limit of {self.options.max_request_bytes}"
            )
        if not call.model:
            raise InvalidInputError(f"{model_field} is empty: name a model (ListModels lists them)")
        surrogate = await self._model(call.model, call.version)
        call.version = surrogate.version
        return surrogate

    async def _predict(
        self,
        request: Message,
        call: Call,
        model_field: str,
        decode: Callable[[Surrogate], dict[str, np.ndarray]],
        tolerance: float | None,
        copies: int = 1,
        wanted: Wanted | None = None,
    ) -> tuple[Surrogate, dict[str, np.ndarray], Answer]:
        """``_lookup``, ``decode(surrogate)`` of the wire tensors, the model's own validation, one
        (batched) forward pass and every sample's check (refined to ``tolerance`` when not None): the
        surrogate, the inputs and the checked answer, in the inputs' batch layout. ``call.forward_ms``
        is the time from the request's entry until the forward pass's outputs were ready. The answer
        carries ``copies`` of the outputs (2 with the reference solution), bounded before any work. With
        ``wanted`` (a ``max_error``), the data plane's router picks the path (serving/dataplane.py)."""
        surrogate = await self._lookup(request, call, model_field)
        inputs = decode(surrogate)
        stacked, batched = surrogate.validate(inputs)
        bound_points(request_points(stacked), MAX_REQUEST_POINTS, "the request")
        bound_answer(stacked, copies * len(surrogate.output_names), self.options.max_request_bytes)
        if wanted is not None:
            route = self.dataplane.route(surrogate, stacked, wanted)
            routed, call.forward_ms = await self.dataplane.answer(
                surrogate, inputs, stacked, batched, route, wanted.max_error, call.started
            )
            self._count(call, surrogate, routed.checks)
            return surrogate, inputs, routed
        outputs = _split(surrogate.output_names, await self._forward(surrogate, stacked), batched)
        call.forward_ms = (time.perf_counter() - call.started) * 1e3
        checks = await self.checker.check(surrogate, inputs, outputs, batched, tolerance)
        self._count(call, surrogate, checks)
        return surrogate, inputs, answer(surrogate.card, inputs, outputs, batched, checks, tolerance)

    def _count(self, call: Call, surrogate: Surrogate, checks: list[SampleCheck]) -> None:
        estimates = [
            c.estimate.relative_l2 for c in checks if c.estimate and c.estimate.relative_l2 is not None
        ]
        paths = [c.path for c in checks]
        self.metrics.answered(call.method, surrogate.name, surrogate.version, paths, estimates)

    @rpc(model_fields=("model", "version"))
    async def Solve(self, request: pb.SolveRequest, call: Call) -> pb.SolveResponse:
        """The model's checked outputs (refined to ``request.tolerance`` when set); ``inference_ms`` is
        the time since the request entered the replica until the forward pass's outputs were ready
        (validation, queueing for the batch and the forward pass)."""
        tolerance = requested_tolerance(request.tolerance, "SolveRequest.tolerance")
        if not 0 <= request.method < len(METHODS):  # proto3 enums are open: any number arrives
            raise InvalidInputError(
                f"SolveRequest.method is {request.method}; use 0 ({METHODS[0]}), 1 ({METHODS[1]}) or 2 "
                f"({METHODS[2]})"
            )
        method = METHODS[request.method]
        wanted = requested_route(request.max_error, method, tolerance, "SolveRequest.max_error")
        if request.reference:  # refused before any work
            points = max((math.prod(t.shape) for t in request.inputs.values()), default=0)
            bound_points(points, MAX_REFERENCE_POINTS, "the classical reference solve of the request")
        surrogate, inputs, checked = await self._predict(
            request,
            call,
            "SolveRequest.model",
            lambda _: _decode(request),
            tolerance,
            1 + request.reference,
            wanted,
        )
        response = pb.SolveResponse(
            model=surrogate.name,
            version=surrogate.version,
            inference_ms=call.forward_ms,
            checks=[c.message() for c in checked.checks],
            grid_validated=checked.grid_validated,
            out_of_range_inputs=checked.out_of_range_inputs,
        )
        for name, array in checked.outputs.items():
            response.outputs[name].CopyFrom(to_tensor(array))
        if request.reference:
            for name, (truth, error) in (await self._reference(surrogate, inputs, checked.outputs)).items():
                response.reference_outputs[name].CopyFrom(to_tensor(truth))
                response.reference_relative_l2[name] = error
            for value in response.reference_relative_l2.values():
                self.metrics.reference_error.observe(
                    value, tags={"model": surrogate.name, "version": surrogate.version}
                )
        return response

    @streaming_rpc(model_fields=("model", "version"))
    async def Rollout(self, request: pb.RolloutRequest, call: Call) -> AsyncIterator[pb.RolloutStep]:
        """Stream ``request.steps`` predicted states of a time-mapped model, feeding each forward pass's
        states back as the next input window (the last ``input_steps`` states); each pass's check
        compares it with the classical solution from the request's exact states. With
        ``max_estimated_error``, a sample whose estimate passes it (or has none) continues with the
        classical solver's states, which are streamed and fed back instead."""
        if not 1 <= request.steps <= MAX_ROLLOUT_STEPS:
            raise InvalidInputError(
                f"RolloutRequest.steps is {request.steps}; ask for 1 to {MAX_ROLLOUT_STEPS} steps"
            )
        max_error = requested_max_error(request.max_estimated_error, "RolloutRequest.max_estimated_error")
        surrogate = await self._lookup(request, call, "RolloutRequest.model")
        times = _time_axis(surrogate)
        if max_error is not None and not calibrated_rollouts(surrogate.card):
            raise FailedPrecondition(
                f"model {surrogate.name} version {surrogate.version} has no calibrated rollout estimate to "
                "hold to RolloutRequest.max_estimated_error; leave it 0, or validate the model "
                "(pdeserve models validate)"
            )
        window, batched = surrogate.validate(_decode(request))
        if max_error is not None:  # the classical fallback's work, bounded as a refinement's
            bound_classical_work(
                math.prod(window.shape[2:]), request_points(window), "no max_estimated_error"
            )
        points = request_points(window)
        bound_points(points, MAX_REQUEST_POINTS, "one step of the rollout")
        bound_answer(window, len(surrogate.output_names), self.options.max_request_bytes)
        bound_points(request.steps * points, MAX_ROLLOUT_POINTS, f"the rollout of {request.steps} steps")
        # Each pass is checked against the classical solution from this exact start, carried along.
        rollouts = await self.checker.start_rollout(
            surrogate.card, _split(surrogate.input_names, window, batched), batched
        )
        stop = threading.Event()  # ends a classical fallback in progress when the stream ends
        try:
            stream = self._roll(request, call, surrogate, times, window, batched, rollouts, max_error, stop)
            async with contextlib.aclosing(stream) as messages:  # closed here, not by the collector
                async for message in messages:
                    yield message
        finally:
            stop.set()

    async def _roll(
        self,
        request: pb.RolloutRequest,
        call: Call,
        surrogate: Surrogate,
        times: RolloutTimes,
        window: np.ndarray,
        batched: bool,
        rollouts: list[estimates.RolloutCheck | None],
        max_error: float | None,
        stop: threading.Event,
    ) -> AsyncIterator[pb.RolloutStep]:
        """``Rollout``'s stream from its validated window: forward pass, checks, the states."""
        # Each step is computed once the client has taken the previous one (the handler waits at its
        # yield), and a client that goes away cancels the handler: no step is computed for nobody.
        step = 0
        while step < request.steps:
            if time.perf_counter() - call.started > ROLLOUT_TIMEOUT_S:
                raise DeadlineExceeded(
                    f"the rollout ran for this server's limit of {ROLLOUT_TIMEOUT_S:g} s after {step} of "
                    f"{request.steps} steps; continue it from the last state in another request"
                )
            if all(r is not None and r.classical is not None for r in rollouts):
                # Every sample fell back: its check answers with the classical states and reads none of
                # these (placeholders in the pass's shape, M states).
                m = len(surrogate.output_names)
                out = np.broadcast_to(window[:, -1:], (window.shape[0], m, *window.shape[2:]))
            else:
                out = await self._forward(surrogate, window)
            checks, rollouts = await self.checker.check_rollout_pass(
                surrogate.card,
                rollouts,
                _split(surrogate.output_names, out, batched),
                batched,
                max_error,
                stop,
                ROLLOUT_TIMEOUT_S - (time.perf_counter() - call.started),
            )
            if any(c.path != estimates.SURROGATE for c in checks):  # the states streamed and fed back
                out = np.stack([[c.outputs[n] for n in surrogate.output_names] for c in checks]).astype(
                    np.float32
                )
            for j in range(min(out.shape[1], request.steps - step)):
                self._count(call, surrogate, checks)
                message = pb.RolloutStep(
                    model=surrogate.name,
                    version=surrogate.version,
                    step=step,
                    checks=[c.message() for c in checks],
                )
                if times.interval is not None:
                    message.time = times.first + step * times.interval
                message.outputs[times.field].CopyFrom(to_tensor(out[:, j] if batched else out[0, j]))
                yield message
                step += 1
            # Sliding window: the newest input_steps states, predictions included, are the next input.
            window = np.concatenate([window, out], axis=1)[:, -window.shape[1] :]

    async def _reference(
        self, surrogate: Surrogate, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> dict[str, tuple[np.ndarray, float]]:
        """The classical solution of every sample and the answer's relative L2 error against it, by
        output name, on the replica's reference thread within ``REFERENCE_TIMEOUT_S`` (waiting for the
        thread included). Work left when the time is up or the client goes away stops after the sample
        in progress."""
        stop = threading.Event()
        work = asyncio.get_running_loop().run_in_executor(
            self._reference_pool, reference_solutions, surrogate, inputs, outputs, stop
        )
        try:
            return await asyncio.wait_for(work, REFERENCE_TIMEOUT_S)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the classical reference solve took longer than this server's limit of "
                f"{REFERENCE_TIMEOUT_S:g} s; ask for it with fewer samples per request"
            ) from None
        finally:
            stop.set()

    @rpc()
    async def ListModels(self, request: pb.ListModelsRequest, call: Call) -> pb.ListModelsResponse:
        """Every model's newest version, from the model cards (no weights are loaded); a model whose
        card cannot be read is left out (GetModel and Solve say what is wrong with it)."""
        names = list(self._index.versions)
        infos = await asyncio.gather(*(self._describe(n, "") for n in names), return_exceptions=True)
        for name, info in zip(names, infos, strict=True):
            if isinstance(info, BaseException):
                logger.warning("ListModels leaves out %s: %s", name, info)
        return pb.ListModelsResponse(models=[info for info in infos if isinstance(info, pb.ModelInfo)])

    @rpc()
    async def GetModel(self, request: pb.GetModelRequest, call: Call) -> pb.ModelInfo:
        """One model version, from its card (its weights are not loaded)."""
        return await self._describe(request.name, request.version)

    @rpc(auth=False)
    async def Check(
        self, request: health_pb2.HealthCheckRequest, call: Call
    ) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1: SERVING while some model's newest version loads (probes need no token)."""
        if request.service not in HEALTH_SERVICES:
            raise NotFound(
                f"unknown service {request.service!r}; this server has {', '.join(HEALTH_SERVICES[1:])}"
            )
        serving = (
            health_pb2.HealthCheckResponse.SERVING
            if self._ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=serving)

    # Open Inference Protocol v2 (inference.GRPCInferenceService); see serving/oip.py for the mapping.

    @rpc(auth=False)
    async def ServerLive(self, request: oip_pb.ServerLiveRequest, call: Call) -> oip_pb.ServerLiveResponse:
        """Live whenever a replica answers (probes need no token)."""
        return self.oip.pb.ServerLiveResponse(live=True)

    @rpc(auth=False)
    async def ServerReady(self, request: oip_pb.ServerReadyRequest, call: Call) -> oip_pb.ServerReadyResponse:
        """Ready while some model's newest version loads, like ``Check`` (probes need no token)."""
        return self.oip.pb.ServerReadyResponse(ready=self._ready())

    @rpc()
    async def ModelReady(self, request: oip_pb.ModelReadyRequest, call: Call) -> oip_pb.ModelReadyResponse:
        """Whether the model (and version) loads. As Triton does, an unknown model or version is "not
        ready" with status OK, and so is a damaged checkpoint."""
        try:
            await self._model(request.name, request.version)
        except (ModelNotFoundError, CheckpointError, FailedPrecondition):
            return self.oip.pb.ModelReadyResponse(ready=False)
        return self.oip.pb.ModelReadyResponse(ready=True)

    @rpc()
    async def ServerMetadata(
        self, request: oip_pb.ServerMetadataRequest, call: Call
    ) -> oip_pb.ServerMetadataResponse:
        """The server's name and version."""
        return self.oip.server_metadata()

    @rpc()
    async def ModelMetadata(
        self, request: oip_pb.ModelMetadataRequest, call: Call
    ) -> oip_pb.ModelMetadataResponse:
        """The model's tensor signatures, from its card (its weights are not loaded)."""
        version = await self._resolve(request.name, request.version)
        with model_files(request.name, version):
            _, card = await asyncio.to_thread(self.repository.card, request.name, version)
            versions = list(self._index.versions.get(request.name, (version,)))
            return self.oip.model_metadata(request.name, card, versions)

    @rpc(model_fields=("model_name", "model_version"))
    async def ModelInfer(self, request: oip_pb.ModelInferRequest, call: Call) -> oip_pb.ModelInferResponse:
        """Solve through the Open Inference Protocol: the same checks, batching and metrics as ``Solve``
        (the tolerance and the accepted error are the request parameters ``tolerance`` and ``max_error``;
        see serving/oip.py)."""
        tolerance = requested_tolerance(self.oip.tolerance(request), "ModelInferRequest parameter tolerance")
        field = "ModelInferRequest parameter max_error"
        wanted = requested_route(self.oip.max_error(request), "auto", tolerance, field)
        surrogate, _, checked = await self._predict(
            request,
            call,
            "ModelInferRequest.model_name",
            lambda s: self.oip.decode_inputs(request, s),
            tolerance,
            wanted=wanted,
        )
        return self.oip.infer_response(request, surrogate, checked)


def build_app(
    repo: str | Path,
    options: ServingOptions | None = None,
    replica_cpus: float = 1.0,
    replicas: int | None = None,
) -> serve.Application:
    """The Serve application for the model repository ``repo``: ``replicas`` replicas (None: Serve's
    one, or what a Serve config's ``autoscaling_config`` says), each reserving ``replica_cpus`` of Ray's
    CPUs (Ray gives a replica's torch that many threads, at least one)."""
    if replicas is not None and replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    options = options or ServingOptions()
    deployment = SolverService.options(
        **({"num_replicas": replicas} if replicas is not None else {}),
        ray_actor_options={
            "num_cpus": replica_cpus,
            "runtime_env": {"env_vars": replica_environment(options)},
        },
        max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
    )
    return deployment.bind(str(Path(repo).resolve()), asdict(options))


def reference_solutions(
    surrogate: Surrogate, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], stop: threading.Event
) -> dict[str, tuple[np.ndarray, float]]:
    """The classical solutions of a request's samples (in its batch layout, float32) and the answer's
    relative L2 error against them, by output name; {} once ``stop`` is set (its caller has gone)."""
    batched = next(iter(inputs.values())).ndim == surrogate.ndim + 1
    batch = {k: v if batched else v[None] for k, v in inputs.items()}
    solved = []
    for i in range(len(next(iter(batch.values())))):
        if stop.is_set():
            return {}
        solved.append(classical_reference(surrogate.card, {k: v[i] for k, v in batch.items()}))
    result = {}
    for name in surrogate.output_names:
        truth = np.stack([s[name] for s in solved]).astype(np.float32)
        pred = outputs[name] if batched else outputs[name][None]
        result[name] = (truth if batched else truth[0], relative_l2(pred[:, None], truth[:, None]))
    return result


def app_builder(args: dict[str, str]) -> serve.Application:
    """Application builder for Serve config files and KubeRay's ``serveConfigV2``
    (``import_path: pdeserve.serving.app:app_builder``, ``args: {repo: /models, auth_token_env: ...}``);
    every ``ServingOptions`` field may be given, as a string."""
    fields = ServingOptions.__dataclass_fields__
    unknown = sorted(set(args) - {"repo", *fields})
    if unknown:
        raise ValueError(f"unknown pdeserve application args {unknown}; known: repo, {', '.join(fields)}")
    defaults = ServingOptions()
    options = {k: type(getattr(defaults, k))(v) for k, v in args.items() if k != "repo"}
    return build_app(args["repo"], ServingOptions(**options))
