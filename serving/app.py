"""The Ray Serve application: one ingress deployment answering the gRPC services.

Ray Serve's gRPC proxy routes ``/pdeserve.v1.Solver/Solve`` to the method ``Solve`` of the ingress
deployment, and ``/grpc.health.v1.Health/Check`` to ``Check``. Errors set a precise status code on the
``grpc_context`` and return an empty message, so a bad request never disturbs the replica. The same
replica answers the Open Inference Protocol v2 (``/inference.GRPCInferenceService/ModelInfer``, ...; see
``serving/oip.py``) through the same validation, batching and metrics as ``Solve``, and streams
``Rollout`` (a generator method: Serve's gRPC proxy streams what it yields).

Concurrent ``Solve`` calls for the same model and grid are stacked into one forward pass by
``@serve.batch``, admitted by a ``BatchGate`` so that the requests arriving during a pass form the next
batch together (serving/batching.py); models load through ``@serve.multiplexed`` (each replica keeps
the most recently used ones), and a request that names no version is resolved against the repository
on every call, so a newly published version is served without a restart.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from ray import serve
from ray.serve import metrics

from pdeserve.datagen.families import get_family
from pdeserve.operators.checkpoint import CheckpointError
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.pairs import reference_outputs
from pdeserve.operators.repository import ModelNotFoundError, ModelRepository
from pdeserve.operators.surrogate import InvalidInputError, Surrogate, load_surrogate
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.serving.allocator import retain_freed_memory
from pdeserve.serving.batching import BatchGate
from pdeserve.serving.options import ServingOptions
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


class RequestError(Exception):
    """A request refused with a specific gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code

    def __reduce__(self) -> tuple:
        # Ray pickles an exception a streaming handler raises to carry it to the proxy.
        return type(self), (self.code, str(self))


def _field_specs(fields: list[dict], shape: list[int]) -> list[pb.FieldSpec]:
    return [
        pb.FieldSpec(name=f["name"], description=f["description"], shape=shape, dtype=pb.DTYPE_FLOAT32)
        for f in fields
    ]


def model_info(surrogate: Surrogate, versions: list[str]) -> pb.ModelInfo:
    """The ``ModelInfo`` message describing a loaded surrogate."""
    config, rule = surrogate.config, surrogate.resolutions
    shape = config["training_resolution"]
    return pb.ModelInfo(
        name=surrogate.name,
        version=surrogate.version,
        versions=versions,
        architecture=config["architecture"],
        pde=config["pde"],
        pde_parameters_json=json.dumps(config["pde_parameters"], sort_keys=True),
        inputs=_field_specs(config["inputs"], shape),
        outputs=_field_specs(config["outputs"], shape),
        min_resolution=rule.minimum,
        max_resolution=rule.maximum,
        resolution_multiple=rule.multiple,
        metrics={k: float(v) for k, v in surrogate.metrics.items()},
        dataset_fingerprint=config["dataset"]["fingerprint"],
        created_at=config["created_at"],
        parameter_count=surrogate.parameter_count(),
    )


def _status(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status code of a known failure, None for a bug."""
    if isinstance(exc, RequestError):
        return exc.code, str(exc)
    if isinstance(exc, ModelNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, CheckpointError):  # a damaged checkpoint is refused, never run
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    return None


def _fail(grpc_context, exc: Exception, empty: Callable[[], object]):
    """Set the status of a known failure on ``grpc_context`` and return ``empty()``; re-raise a bug."""
    known = _status(exc)
    if known is None:
        raise exc
    grpc_context.set_code(known[0])
    grpc_context.set_details(known[1])
    return empty()


def _decode(request: pb.SolveRequest | pb.RolloutRequest) -> dict[str, np.ndarray]:
    return {name: from_tensor(tensor, name) for name, tensor in request.inputs.items()}


def _split(names: list[str], out: np.ndarray, batched: bool) -> dict[str, np.ndarray]:
    """Channels of ``(batch, channels, *grid)`` by name, without the batch axis if the caller sent none."""
    return {name: out[:, i] if batched else out[0, i] for i, name in enumerate(names)}


def _trajectory(surrogate: Surrogate) -> tuple[str, float, float | None]:
    """For a model trained on a time map: the state field it steps (e.g. ``w``), the time of its first
    predicted state and the time between states (None when the recorded times are not evenly spaced),
    counting the first input state as t = 0. ``RequestError`` (FAILED_PRECONDITION) for a steady model."""
    config = surrogate.config
    time_map = config.get("time_map")
    if not time_map:
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"model {surrogate.name} is not time-dependent (it maps {surrogate.input_names} to "
            f"{surrogate.output_names}); Rollout needs a model trained on trajectory data with "
            "--input-steps/--output-steps: use Solve for this one",
        )
    family = get_family(config["pde"])
    params = family.parameters_from(config["pde_parameters"])
    times = np.array([0.0, *family.coordinates(params, config["training_resolution"][-1])["t"]])
    steps = np.diff(times)
    first = float(times[time_map["input_steps"]])
    return family.outputs[0].name, first, float(steps[0]) if np.allclose(steps, steps[0]) else None


class Metrics:
    """pdeserve's own metrics, exported with Ray's on the metrics port (Ray names them ``ray_pdeserve_*``)."""

    def __init__(self) -> None:
        tags = ("model", "version")
        self.requests = metrics.Counter(
            "pdeserve_requests",
            "inference requests (Solve, ModelInfer, Rollout) by outcome",
            tag_keys=(*tags, "method", "code"),
        )
        self.latency = metrics.Histogram(
            "pdeserve_request_latency_ms",
            "inference request latency inside the replica (validation, queueing, inference; a whole Rollout)",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
            tag_keys=(*tags, "method"),
        )
        self.batch_size = metrics.Histogram(
            "pdeserve_batch_size",
            "requests stacked per forward pass",
            [1, 2, 4, 8, 16, 32, 64],
            tag_keys=tags,
        )
        self.forward_passes = metrics.Counter(
            "pdeserve_forward_passes", "forward passes (requests / passes = mean batch size)", tag_keys=tags
        )
        self.load_seconds = metrics.Gauge(
            "pdeserve_model_load_seconds", "time to load a model", tag_keys=tags
        )
        self.reference_error = metrics.Histogram(
            "pdeserve_reference_relative_l2",
            "relative L2 of the surrogate against the classical solver, when a request asks for it",
            boundaries=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            tag_keys=tags,
        )


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
        # OpenMP team, and two teams on the same cores took a batch-1 forward pass of the bundled FNO
        # from 9-13 ms to 17-23 ms here. A model load therefore waits for the forward pass in progress,
        # and the next pass for the load.
        self._torch_thread = ThreadPoolExecutor(1, thread_name_prefix="pdeserve-torch")
        self.repository = ModelRepository(repo)
        self.options = ServingOptions(**(options or {}))
        self.auth_token = self.options.resolved_auth_token()
        self.metrics = Metrics()
        from pdeserve.serving import oip  # here, not at the top: see serving/oip.py

        self.oip = oip
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

    def _authorize(self, grpc_context) -> None:
        token = self.auth_token
        if not token:
            return
        metadata = dict(grpc_context.invocation_metadata() or [])
        given = metadata.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestError(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token in 'authorization'")

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
        the gate admits alone skips the batcher's queue (0.4 ms here); with a batch wait, the batcher
        gathers by itself (the gate would hold back whom it waits for)."""
        if self.options.batch_wait_s:
            return await self._infer((surrogate, x))

        async def enter(alone: bool) -> np.ndarray:
            if alone:
                (out,) = await self._passes([(surrogate, x)])
                return out
            return await self._infer((surrogate, x))

        return await self._gate.run(enter)

    async def _answer(
        self,
        method: str,
        grpc_context,
        model: str,
        version: str,
        empty: Callable[[], Message],
        answer: Callable[[float], Awaitable[tuple[Message, str]]],
    ) -> Message:
        """Authenticate, run ``answer(started)`` (which returns the response and the version that served
        it), give a known failure its status, and count the request in pdeserve's metrics."""
        started = time.perf_counter()
        tags = {"model": model or "-", "version": version or "-", "method": method}
        try:
            self._authorize(grpc_context)
            response, tags["version"] = await answer(started)
            code = grpc.StatusCode.OK
        except Exception as exc:  # every known failure gets its status; the replica keeps serving
            response = _fail(grpc_context, exc, empty)
            code = _status(exc)[0]
        self._count(tags, code, started)
        return response

    def _count(self, tags: dict[str, str], code: grpc.StatusCode, started: float) -> None:
        self.metrics.requests.inc(tags={**tags, "code": code.name})
        self.metrics.latency.observe((time.perf_counter() - started) * 1e3, tags=tags)

    async def _lookup(self, request: Message, model: str, version: str, model_field: str) -> Surrogate:
        """The checks every inference request starts with, whatever its protocol: the size limit and
        the model (``model_field`` names the request field that holds ``model`` in errors)."""
        size = request.ByteSize()
        if size > self.options.max_request_bytes:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {size} bytes is above this server's limit of {self.options.max_request_bytes}",
            )
        if not model:
            raise InvalidInputError(f"{model_field} is empty: name a model (ListModels lists them)")
        return await self._model(model, version)

    async def _predict(
        self,
        request: Message,
        model: str,
        version: str,
        model_field: str,
        decode: Callable[[Surrogate], dict[str, np.ndarray]],
    ) -> tuple[Surrogate, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``_lookup``, ``decode(surrogate)`` of the wire tensors, the model's own validation and one
        (batched) forward pass: the surrogate, the inputs and the outputs by name, in the inputs' batch
        layout."""
        surrogate = await self._lookup(request, model, version, model_field)
        inputs = decode(surrogate)
        stacked, batched = surrogate.validate(inputs)
        out = await self._forward(surrogate, stacked)
        return surrogate, inputs, _split(surrogate.output_names, out, batched)

    async def Solve(self, request: pb.SolveRequest, grpc_context) -> pb.SolveResponse:
        async def answer(started: float) -> tuple[pb.SolveResponse, str]:
            surrogate, inputs, outputs = await self._predict(
                request, request.model, request.version, "SolveRequest.model", lambda _: _decode(request)
            )
            response = pb.SolveResponse(
                model=surrogate.name,
                version=surrogate.version,
                inference_ms=(time.perf_counter() - started) * 1e3,
            )
            for name, array in outputs.items():
                response.outputs[name].CopyFrom(to_tensor(array))
            if request.reference:
                await asyncio.to_thread(self._reference, surrogate, inputs, outputs, response)
                for value in response.reference_relative_l2.values():
                    self.metrics.reference_error.observe(
                        value, tags={"model": surrogate.name, "version": surrogate.version}
                    )
            return response, surrogate.version

        return await self._answer(
            "Solve", grpc_context, request.model, request.version, pb.SolveResponse, answer
        )

    async def Rollout(self, request: pb.RolloutRequest, grpc_context) -> AsyncIterator[pb.RolloutStep]:
        """Stream ``request.steps`` predicted states of a time-mapped model, feeding each forward pass's
        states back as the next input window (the last ``input_steps`` states)."""
        started = time.perf_counter()
        tags = {"model": request.model or "-", "version": request.version or "-", "method": "Rollout"}
        try:
            self._authorize(grpc_context)
            if not 1 <= request.steps <= MAX_ROLLOUT_STEPS:
                raise InvalidInputError(
                    f"RolloutRequest.steps is {request.steps}; ask for 1 to {MAX_ROLLOUT_STEPS} steps"
                )
            surrogate = await self._lookup(request, request.model, request.version, "RolloutRequest.model")
            tags["version"] = surrogate.version
            field, first_time, interval = _trajectory(surrogate)
            window, batched = surrogate.validate(_decode(request))
            step = 0
            while step < request.steps:
                out = await self._forward(surrogate, window)
                for j in range(min(out.shape[1], request.steps - step)):
                    message = pb.RolloutStep(model=surrogate.name, version=surrogate.version, step=step)
                    if interval is not None:
                        message.time = first_time + step * interval
                    message.outputs[field].CopyFrom(to_tensor(out[:, j] if batched else out[0, j]))
                    yield message
                    step += 1
                # Sliding window: the newest input_steps states, predictions included, are the next input.
                window = np.concatenate([window, out], axis=1)[:, -window.shape[1] :]
        except Exception as exc:
            _fail(grpc_context, exc, lambda: None)
            self._count(tags, _status(exc)[0], started)
            # Unlike a unary answer, a stream's status reaches the client only if the generator raises:
            # Serve then sends the code set on grpc_context (ray-project/ray#58851).
            raise
        self._count(tags, grpc.StatusCode.OK, started)

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
        solved = [reference_outputs(surrogate.config, {k: v[i] for k, v in batch.items()}) for i in range(n)]
        for name in surrogate.output_names:
            truth = np.stack([s[name] for s in solved]).astype(np.float32)
            pred = outputs[name] if batched else outputs[name][None]
            response.reference_outputs[name].CopyFrom(to_tensor(truth if batched else truth[0]))
            response.reference_relative_l2[name] = relative_l2(pred[:, None], truth[:, None])

    async def ListModels(self, request: pb.ListModelsRequest, grpc_context) -> pb.ListModelsResponse:
        try:
            self._authorize(grpc_context)
            models = []
            for name in self.repository.names():
                models.append(model_info(await self._model(name, ""), self.repository.versions(name)))
            return pb.ListModelsResponse(models=models)
        except Exception as exc:
            return _fail(grpc_context, exc, pb.ListModelsResponse)

    async def GetModel(self, request: pb.GetModelRequest, grpc_context) -> pb.ModelInfo:
        try:
            self._authorize(grpc_context)
            surrogate = await self._model(request.name, request.version)
            return model_info(surrogate, self.repository.versions(request.name))
        except Exception as exc:
            return _fail(grpc_context, exc, pb.ModelInfo)

    def Check(self, request: health_pb2.HealthCheckRequest, grpc_context) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1: SERVING once at least one model is loaded (probes need no token)."""
        if request.service not in HEALTH_SERVICES:
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(
                f"unknown service {request.service!r}; this server has {', '.join(HEALTH_SERVICES[1:])}"
            )
            return health_pb2.HealthCheckResponse()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)

    # Open Inference Protocol v2 (inference.GRPCInferenceService); see serving/oip.py for the mapping.

    def ServerLive(self, request: oip_pb.ServerLiveRequest, grpc_context) -> oip_pb.ServerLiveResponse:
        """Live whenever a replica answers (probes need no token)."""
        return self.oip.pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: oip_pb.ServerReadyRequest, grpc_context) -> oip_pb.ServerReadyResponse:
        """Ready once at least one model is loaded, like ``Check`` (probes need no token)."""
        return self.oip.pb.ServerReadyResponse(ready=self._ready > 0)

    async def ModelReady(self, request: oip_pb.ModelReadyRequest, grpc_context) -> oip_pb.ModelReadyResponse:
        """Whether the model (and version) loads. As Triton does, an unknown model or version is "not
        ready" with status OK, and so is a damaged checkpoint."""
        try:
            self._authorize(grpc_context)
            try:
                await self._model(request.name, request.version)
            except (ModelNotFoundError, CheckpointError):
                return self.oip.pb.ModelReadyResponse(ready=False)
            return self.oip.pb.ModelReadyResponse(ready=True)
        except Exception as exc:
            return _fail(grpc_context, exc, self.oip.pb.ModelReadyResponse)

    def ServerMetadata(
        self, request: oip_pb.ServerMetadataRequest, grpc_context
    ) -> oip_pb.ServerMetadataResponse:
        try:
            self._authorize(grpc_context)
            return self.oip.server_metadata()
        except Exception as exc:
            return _fail(grpc_context, exc, self.oip.pb.ServerMetadataResponse)

    async def ModelMetadata(
        self, request: oip_pb.ModelMetadataRequest, grpc_context
    ) -> oip_pb.ModelMetadataResponse:
        try:
            self._authorize(grpc_context)
            surrogate = await self._model(request.name, request.version)
            return self.oip.model_metadata(surrogate, self.repository.versions(request.name))
        except Exception as exc:
            return _fail(grpc_context, exc, self.oip.pb.ModelMetadataResponse)

    async def ModelInfer(self, request: oip_pb.ModelInferRequest, grpc_context) -> oip_pb.ModelInferResponse:
        """Solve through the Open Inference Protocol: the same checks, batching and metrics as ``Solve``."""

        async def answer(started: float) -> tuple[oip_pb.ModelInferResponse, str]:
            surrogate, _, outputs = await self._predict(
                request,
                request.model_name,
                request.model_version,
                "ModelInferRequest.model_name",
                lambda surrogate: self.oip.decode_inputs(request, surrogate),
            )
            return self.oip.infer_response(request, surrogate, outputs), surrogate.version

        return await self._answer(
            "ModelInfer",
            grpc_context,
            request.model_name,
            request.model_version,
            self.oip.pb.ModelInferResponse,
            answer,
        )


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
