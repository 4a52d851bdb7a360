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
batch together (serving/batching.py); models load through ``@serve.multiplexed`` (each replica keeps
the most recently used ones), and a request that names no version is resolved against the repository
on every call, so a newly published version is served without a restart. Describing a model
(``ListModels``, ``GetModel``, ``ModelMetadata``) reads its model card only, never its weights.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from ray import serve

from pdeserve.operators.card import FieldSpec, ModelCard
from pdeserve.operators.errors import CheckpointError, InvalidInputError
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.pairs import RolloutTimes, reference_outputs, rollout_times
from pdeserve.operators.registry import make_config
from pdeserve.operators.repository import ModelNotFoundError, ModelRepository
from pdeserve.operators.surrogate import Surrogate, load_surrogate
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.serving.allocator import retain_freed_memory
from pdeserve.serving.batching import BatchGate
from pdeserve.serving.checks import Answer, Checker, SampleCheck, answer, requested_tolerance
from pdeserve.serving.errors import FailedPrecondition, NotFound, ResourceExhausted
from pdeserve.serving.metrics import Metrics
from pdeserve.serving.options import ServingOptions
from pdeserve.serving.rpc import Call, response_types, rpc, streaming_rpc
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


def _field_specs(fields: tuple[FieldSpec, ...], shape: list[int]) -> list[pb.FieldSpec]:
    return [
        pb.FieldSpec(name=f.name, description=f.description, shape=shape, dtype=pb.DTYPE_FLOAT32)
        for f in fields
    ]


def model_info(name: str, version: str, card: ModelCard, versions: list[str]) -> pb.ModelInfo:
    """The ``ModelInfo`` message describing version ``version`` of model ``name`` from its card."""
    rule = make_config(card.architecture, card.arguments).resolutions()
    shape = list(card.training_resolution)
    info = pb.ModelInfo(
        name=name,
        version=version,
        versions=versions,
        architecture=card.architecture,
        pde=card.pde,
        pde_parameters_json=json.dumps(card.pde_parameters, sort_keys=True),
        inputs=_field_specs(card.inputs, shape),
        outputs=_field_specs(card.outputs, shape),
        min_resolution=rule.minimum,
        max_resolution=rule.maximum,
        resolution_multiple=rule.multiple,
        metrics={k: float(v) for k, v in card.metrics.items()},
        dataset_fingerprint=card.dataset.fingerprint,
        created_at=card.created_at,
        parameter_count=card.parameter_count,
        input_ranges=[pb.ValueRange(name=r.name, low=r.low, high=r.high) for r in card.input_ranges],
    )
    if card.validation is not None:
        info.side_errors.extend(
            pb.SideError(side=s.side, relative_l2=s.relative_l2, n_samples=s.n_samples)
            for s in card.validation.sides
        )
        info.validated_min_side, info.validated_max_side = card.validation.validated_range()
        info.validation_max_factor = card.validation.max_factor
    if card.calibration is not None:
        info.estimate_coverage = card.calibration.coverage
        info.error_indicator = card.calibration.indicator
        info.calibration_samples = card.calibration.n_samples
    return info


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
    return rollout_times(surrogate.card)


@serve.deployment(name="SolverService")  # queue bounds come from ServingOptions in build_app
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
        # solves, which may take long, keep their own threads): each thread that runs torch gets its own
        # OpenMP team, and two teams on the same cores slow each other's forward passes. A model load
        # therefore waits for the forward pass in progress, and the next pass for the load.
        self._torch_thread = ThreadPoolExecutor(1, thread_name_prefix="pdeserve-torch")
        self.repository = ModelRepository(repo)
        self.options = ServingOptions(**(options or {}))
        self.auth_token = self.options.resolved_auth_token()
        self.metrics = Metrics()
        self.checker = Checker()  # estimates and refinements, on threads of their own
        from pdeserve.serving import oip  # here, not at the top: see serving/oip.py

        self.oip = oip
        self.response_types = response_types(pb.DESCRIPTOR, oip.pb.DESCRIPTOR, health_pb2.DESCRIPTOR)
        self._infer.set_max_batch_size(self.options.max_batch_size)
        self._infer.set_batch_wait_timeout_s(self.options.batch_wait_s)
        self._gate = BatchGate(self.options.batch_hold_fraction)
        self._ready = 0
        for name in self.repository.names():
            try:
                await self._model(name, "")
                self._ready += 1
            except CheckpointError as exc:  # serve the healthy models; requests for this one fail clearly
                logger.error("not serving %s: %s", name, exc)
        logger.info("pdeserve replica loaded %d model(s) from %s", self._ready, repo)

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def _load(self, model_id: str) -> Surrogate:
        name, _, version = model_id.rpartition(":")
        started = time.perf_counter()
        _, folder = self.repository.resolve(name, version)
        surrogate = await self._on_torch_thread(load_surrogate, folder, name, version)
        self.metrics.load_seconds.set(time.perf_counter() - started, tags={"model": name, "version": version})
        return surrogate

    async def _on_torch_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._torch_thread, function, *args)

    async def _model(self, name: str, version: str) -> Surrogate:
        # Resolved on every call: "newest" follows the repository as versions are published.
        version, _ = self.repository.resolve(name, version)
        return await self._load(f"{name}:{version}")

    async def _describe(self, name: str, version: str) -> pb.ModelInfo:
        """``ModelInfo`` of ``name`` at ``version`` ("" = newest) from its card, without loading weights."""
        version, card = await asyncio.to_thread(self.repository.card, name, version)
        return model_info(name, version, card, self.repository.versions(name))

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
            self.metrics.forward_passes.inc(tags={"model": name, "version": version})
            out = await self._on_torch_thread(surrogate.forward, stacked)
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
    ) -> tuple[Surrogate, dict[str, np.ndarray], Answer]:
        """``_lookup``, ``decode(surrogate)`` of the wire tensors, the model's own validation, one
        (batched) forward pass and every sample's check (refined to ``tolerance`` when not None): the
        surrogate, the inputs and the checked answer, in the inputs' batch layout. ``call.forward_ms``
        is the time from the request's entry until the forward pass's outputs were ready."""
        surrogate = await self._lookup(request, call, model_field)
        inputs = decode(surrogate)
        stacked, batched = surrogate.validate(inputs)
        outputs = _split(surrogate.output_names, await self._forward(surrogate, stacked), batched)
        call.forward_ms = (time.perf_counter() - call.started) * 1e3
        checks = await self.checker.check(surrogate.card, inputs, outputs, batched, tolerance)
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
        surrogate, inputs, checked = await self._predict(
            request, call, "SolveRequest.model", lambda _: _decode(request), tolerance
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
            await asyncio.to_thread(self._reference, surrogate, inputs, checked.outputs, response)
            for value in response.reference_relative_l2.values():
                self.metrics.reference_error.observe(
                    value, tags={"model": surrogate.name, "version": surrogate.version}
                )
        return response

    @streaming_rpc(model_fields=("model", "version"))
    async def Rollout(self, request: pb.RolloutRequest, call: Call) -> AsyncIterator[pb.RolloutStep]:
        """Stream ``request.steps`` predicted states of a time-mapped model, feeding each forward pass's
        states back as the next input window (the last ``input_steps`` states)."""
        if not 1 <= request.steps <= MAX_ROLLOUT_STEPS:
            raise InvalidInputError(
                f"RolloutRequest.steps is {request.steps}; ask for 1 to {MAX_ROLLOUT_STEPS} steps"
            )
        surrogate = await self._lookup(request, call, "RolloutRequest.model")
        times = _time_axis(surrogate)
        window, batched = surrogate.validate(_decode(request))
        step = 0
        while step < request.steps:
            out = await self._forward(surrogate, window)
            checks = await self.checker.check(
                surrogate.card,
                _split(surrogate.input_names, window, batched),
                _split(surrogate.output_names, out, batched),
                batched,
                None,
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

    @staticmethod
    def _reference(
        surrogate: Surrogate,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        response: pb.SolveResponse,
    ) -> None:
        batched = next(iter(inputs.values())).ndim == surrogate.ndim + 1
        batch = {k: v if batched else v[None] for k, v in inputs.items()}
        n = len(next(iter(batch.values())))
        solved = [reference_outputs(surrogate.card, {k: v[i] for k, v in batch.items()}) for i in range(n)]
        for name in surrogate.output_names:
            truth = np.stack([s[name] for s in solved]).astype(np.float32)
            pred = outputs[name] if batched else outputs[name][None]
            response.reference_outputs[name].CopyFrom(to_tensor(truth if batched else truth[0]))
            response.reference_relative_l2[name] = relative_l2(pred[:, None], truth[:, None])

    @rpc()
    async def ListModels(self, request: pb.ListModelsRequest, call: Call) -> pb.ListModelsResponse:
        """Every model's newest version, from the model cards (no weights are loaded)."""
        names = self.repository.names()
        return pb.ListModelsResponse(models=await asyncio.gather(*(self._describe(n, "") for n in names)))

    @rpc()
    async def GetModel(self, request: pb.GetModelRequest, call: Call) -> pb.ModelInfo:
        """One model version, from its card (its weights are not loaded)."""
        return await self._describe(request.name, request.version)

    @rpc(auth=False)
    async def Check(
        self, request: health_pb2.HealthCheckRequest, call: Call
    ) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1: SERVING once at least one model is loaded (probes need no token)."""
        if request.service not in HEALTH_SERVICES:
            raise NotFound(
                f"unknown service {request.service!r}; this server has {', '.join(HEALTH_SERVICES[1:])}"
            )
        serving = (
            health_pb2.HealthCheckResponse.SERVING
            if self._ready
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
        """Ready once at least one model is loaded, like ``Check`` (probes need no token)."""
        return self.oip.pb.ServerReadyResponse(ready=self._ready > 0)

    @rpc()
    async def ModelReady(self, request: oip_pb.ModelReadyRequest, call: Call) -> oip_pb.ModelReadyResponse:
        """Whether the model (and version) loads. As Triton does, an unknown model or version is "not
        ready" with status OK, and so is a damaged checkpoint."""
        try:
            await self._model(request.name, request.version)
        except (ModelNotFoundError, CheckpointError):
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
        _, card = await asyncio.to_thread(self.repository.card, request.name, request.version)
        return self.oip.model_metadata(request.name, card, self.repository.versions(request.name))

    @rpc(model_fields=("model_name", "model_version"))
    async def ModelInfer(self, request: oip_pb.ModelInferRequest, call: Call) -> oip_pb.ModelInferResponse:
        """Solve through the Open Inference Protocol: the same checks, batching and metrics as ``Solve``
        (the tolerance is the request parameter ``tolerance``; see serving/oip.py)."""
        tolerance = requested_tolerance(self.oip.tolerance(request), "ModelInferRequest parameter tolerance")
        surrogate, _, checked = await self._predict(
            request,
            call,
            "ModelInferRequest.model_name",
            lambda s: self.oip.decode_inputs(request, s),
            tolerance,
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
        ray_actor_options={"num_cpus": replica_cpus},
        max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
    )
    return deployment.bind(str(Path(repo).resolve()), asdict(options))


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
