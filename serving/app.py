"""The Ray Serve application: one ingress deployment answering the gRPC services.

Ray Serve's gRPC proxy routes ``/pdeserve.v1.Solver/Solve`` to the method ``Solve`` of the ingress
deployment, and ``/grpc.health.v1.Health/Check`` to ``Check``. Errors set a precise status code on the
``grpc_context`` and return an empty message, so a bad request never disturbs the replica.

Concurrent ``Solve`` calls for the same model and grid are stacked into one forward pass by
``@serve.batch``; models load through ``@serve.multiplexed`` (each replica keeps the most recently used
ones), and a request that names no version is resolved against the repository on every call, so a
newly published version is served without a restart.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2
from ray import serve
from ray.serve import metrics

from pdeserve.operators.checkpoint import CheckpointError
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.pairs import reference_outputs
from pdeserve.operators.repository import ModelNotFoundError, ModelRepository
from pdeserve.operators.surrogate import InvalidInputError, Surrogate, load_surrogate
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.serving.options import ServingOptions
from pdeserve.serving.tensors import from_tensor, to_tensor

logger = logging.getLogger("pdeserve")
SERVICE_NAME = "pdeserve.v1.Solver"
MODELS_PER_REPLICA = 8


class RequestError(Exception):
    """A request refused with a specific gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


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
    known = _status(exc)
    if known is None:
        raise exc
    grpc_context.set_code(known[0])
    grpc_context.set_details(known[1])
    return empty()


class Metrics:
    """pdeserve's own metrics, exported with Ray's on the metrics port (Ray names them ``ray_pdeserve_*``)."""

    def __init__(self) -> None:
        tags = ("model", "version")
        self.requests = metrics.Counter(
            "pdeserve_requests", "Solve requests by outcome", tag_keys=(*tags, "code")
        )
        self.latency = metrics.Histogram(
            "pdeserve_request_latency_ms",
            "Solve latency inside the replica (validation, queueing, inference)",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
            tag_keys=tags,
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
        self.repository = ModelRepository(repo)
        self.options = ServingOptions(**(options or {}))
        self.metrics = Metrics()
        self._infer.set_max_batch_size(self.options.max_batch_size)
        self._infer.set_batch_wait_timeout_s(self.options.batch_wait_s)
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
        surrogate = await asyncio.to_thread(load_surrogate, folder, name, version)
        self.metrics.load_seconds.set(time.perf_counter() - started, tags={"model": name, "version": version})
        return surrogate

    async def _model(self, name: str, version: str) -> Surrogate:
        # Resolved on every call: "newest" follows the repository as versions are published.
        version, _ = self.repository.resolve(name, version)
        return await self._load(f"{name}:{version}")

    def _authorize(self, grpc_context) -> None:
        token = self.options.auth_token
        if not token:
            return
        metadata = dict(grpc_context.invocation_metadata() or [])
        given = metadata.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestError(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token in 'authorization'")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _infer(self, items: list[tuple[Surrogate, np.ndarray]]) -> list[np.ndarray]:
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
            out = await asyncio.to_thread(surrogate.forward, stacked)
            offsets = np.cumsum([0] + [len(items[i][1]) for i in members])
            for j, i in enumerate(members):
                results[i] = out[offsets[j] : offsets[j + 1]]
        return results

    async def Solve(self, request: pb.SolveRequest, grpc_context) -> pb.SolveResponse:
        started = time.perf_counter()
        tags = {"model": request.model or "-", "version": request.version or "-"}
        try:
            response = await self._solve(request, grpc_context, started)
            tags["version"] = response.version
            code = grpc.StatusCode.OK
        except Exception as exc:  # every known failure gets its status; the replica keeps serving
            response = _fail(grpc_context, exc, pb.SolveResponse)
            code = _status(exc)[0]
        self.metrics.requests.inc(tags={**tags, "code": code.name})
        self.metrics.latency.observe((time.perf_counter() - started) * 1e3, tags=tags)
        return response

    async def _solve(self, request: pb.SolveRequest, grpc_context, started: float) -> pb.SolveResponse:
        self._authorize(grpc_context)
        size = request.ByteSize()
        if size > self.options.max_request_bytes:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {size} bytes is above this server's limit of {self.options.max_request_bytes}",
            )
        if not request.model:
            raise InvalidInputError("SolveRequest.model is empty: name a model (ListModels lists them)")
        surrogate = await self._model(request.model, request.version)
        inputs = {name: from_tensor(tensor, name) for name, tensor in request.inputs.items()}
        stacked, batched = surrogate.validate(inputs)
        out = await self._infer((surrogate, stacked))
        outputs = {name: out[:, i] if batched else out[0, i] for i, name in enumerate(surrogate.output_names)}
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
        return response

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
        if request.service not in ("", SERVICE_NAME):
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(f"unknown service {request.service!r}; this server has {SERVICE_NAME!r}")
            return health_pb2.HealthCheckResponse()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)


def build_app(
    repo: str | Path, options: ServingOptions | None = None, replica_cpus: float = 1.0
) -> serve.Application:
    """The Serve application for the model repository ``repo`` (each replica reserving
    ``replica_cpus`` of Ray's CPUs; Ray gives a replica's torch that many threads, at least one)."""
    options = options or ServingOptions()
    deployment = SolverService.options(
        ray_actor_options={"num_cpus": replica_cpus},
        max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
    )
    return deployment.bind(str(Path(repo).resolve()), asdict(options))


def app_builder(args: dict[str, str]) -> serve.Application:
    """Application builder for Serve config files and KubeRay's ``serveConfigV2``
    (``import_path: pdeserve.serving.app:app_builder``, ``args: {repo: /models, auth_token: ...}``);
    every ``ServingOptions`` field may be given, as a string."""
    fields = ServingOptions.__dataclass_fields__
    unknown = sorted(set(args) - {"repo", *fields})
    if unknown:
        raise ValueError(f"unknown pdeserve application args {unknown}; known: repo, {', '.join(fields)}")
    defaults = ServingOptions()
    options = {k: type(getattr(defaults, k))(v) for k, v in args.items() if k != "repo"}
    return build_app(args["repo"], ServingOptions(**options))
