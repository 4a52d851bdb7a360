"""The Ray Serve application: one ingress deployment answering the gRPC services.

Ray Serve's gRPC proxy routes ``/pdeserve.v1.Solver/Solve`` to the method ``Solve`` of the ingress
deployment, and ``/grpc.health.v1.Health/Check`` to ``Check``. Errors set a precise status code on the
``grpc_context`` and return an empty message, so a bad request never disturbs the replica.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2
from ray import serve

from pdeserve.operators.checkpoint import CheckpointError
from pdeserve.operators.evaluation import relative_l2
from pdeserve.operators.pairs import reference_outputs
from pdeserve.operators.repository import ModelNotFoundError, ModelRepository
from pdeserve.operators.surrogate import InvalidInputError, Surrogate, load_surrogate
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.serving.tensors import from_tensor, to_tensor

logger = logging.getLogger("pdeserve")
SERVICE_NAME = "pdeserve.v1.Solver"


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


def _answer(grpc_context, empty: Callable[[], object], work: Callable[[], object]):
    """Run ``work``; map known failures to their status codes on ``grpc_context``."""
    try:
        return work()
    except ModelNotFoundError as exc:
        code, details = grpc.StatusCode.NOT_FOUND, str(exc)
    except InvalidInputError as exc:
        code, details = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    except CheckpointError as exc:  # a damaged checkpoint is refused, never run
        code, details = grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    grpc_context.set_code(code)
    grpc_context.set_details(details)
    return empty()


@serve.deployment(name="SolverService")
class SolverService:
    """Serves every model of a repository; a request without a version gets the newest one.

    Parameters
    ----------
    repo : str
        Absolute path of the model repository.
    """

    def __init__(self, repo: str) -> None:
        self.repository = ModelRepository(repo)
        self._models: dict[tuple[str, str], Surrogate] = {}
        self._lock = threading.Lock()
        for name in self.repository.names():
            try:
                self._model(name, "")
            except CheckpointError as exc:  # serve the healthy models; requests for this one fail clearly
                logger.error("not serving %s: %s", name, exc)
        logger.info("pdeserve replica loaded %d model(s) from %s", len(self._models), repo)

    def _model(self, name: str, version: str) -> Surrogate:
        version, folder = self.repository.resolve(name, version)
        with self._lock:
            if (name, version) not in self._models:
                self._models[(name, version)] = load_surrogate(folder, name, version)
            return self._models[(name, version)]

    def Solve(self, request: pb.SolveRequest, grpc_context) -> pb.SolveResponse:
        return _answer(grpc_context, pb.SolveResponse, lambda: self._solve(request))

    def _solve(self, request: pb.SolveRequest) -> pb.SolveResponse:
        if not request.model:
            raise InvalidInputError("SolveRequest.model is empty: name a model (ListModels lists them)")
        surrogate = self._model(request.model, request.version)
        inputs = {name: from_tensor(tensor, name) for name, tensor in request.inputs.items()}
        started = time.perf_counter()
        outputs = surrogate.predict(inputs)
        response = pb.SolveResponse(
            model=surrogate.name,
            version=surrogate.version,
            inference_ms=(time.perf_counter() - started) * 1e3,
        )
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_tensor(array))
        if request.reference:
            self._reference(surrogate, inputs, outputs, response)
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

    def ListModels(self, request: pb.ListModelsRequest, grpc_context) -> pb.ListModelsResponse:
        def work() -> pb.ListModelsResponse:
            names = self.repository.names()
            return pb.ListModelsResponse(
                models=[model_info(self._model(n, ""), self.repository.versions(n)) for n in names]
            )

        return _answer(grpc_context, pb.ListModelsResponse, work)

    def GetModel(self, request: pb.GetModelRequest, grpc_context) -> pb.ModelInfo:
        return _answer(
            grpc_context,
            pb.ModelInfo,
            lambda: model_info(
                self._model(request.name, request.version), self.repository.versions(request.name)
            ),
        )

    def Check(self, request: health_pb2.HealthCheckRequest, grpc_context) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1: SERVING once at least one model is loaded."""
        if request.service not in ("", SERVICE_NAME):
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(f"unknown service {request.service!r}; this server has {SERVICE_NAME!r}")
            return health_pb2.HealthCheckResponse()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._models
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)


def build_app(repo: str | Path) -> serve.Application:
    """The Serve application for the model repository ``repo``."""
    return SolverService.bind(str(Path(repo).resolve()))


def app_builder(args: dict[str, str]) -> serve.Application:
    """Application builder for Serve config files and KubeRay's ``serveConfigV2``
    (``import_path: pdeserve.serving.app:app_builder``, ``args: {repo: /models}``)."""
    return build_app(args["repo"])
