"""The Open Inference Protocol v2 (``inference.GRPCInferenceService``) in pdeserve's terms.

Mapping: the OIP model name is the pdeserve model name and ``model_version`` its version ("" = newest).
Input tensors are the model's input fields (``FP32`` or ``FP64``, shape ``(*grid)`` or
``(batch, *grid)``), as typed contents (``fp32_contents``/``fp64_contents``) or ``raw_input_contents``;
outputs are the output fields, ``FP32``, always answered as ``raw_output_contents`` (what Triton sends
and what its clients read).

Only the replicas import this module (``SolverService`` does, when it starts): tritonclient's generated
modules define the same ``inference.*`` messages in protobuf's default descriptor pool, so a process that
uses Triton's client cannot also import ours, and clients and tests import ``pdeserve.serving.app`` to
deploy it.
"""

from __future__ import annotations

import math
from importlib.metadata import version as package_version

import numpy as np

from pdeserve.operators.card import ModelCard
from pdeserve.operators.errors import InvalidInputError
from pdeserve.operators.surrogate import Surrogate
from pdeserve.protos.inference import grpc_service_pb2 as pb
from pdeserve.serving.tensors import array_from_bytes, checked_shape

SERVER_NAME = "pdeserve"
# OIP datatype -> numpy dtype, and the typed-contents field that carries it.
DATATYPES: dict[str, tuple[np.dtype, str]] = {
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}


def server_metadata() -> pb.ServerMetadataResponse:
    """Server name and pdeserve's version; no protocol extensions."""
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=package_version("pdeserve"), extensions=[])


def model_metadata(name: str, card: ModelCard, versions: list[str]) -> pb.ModelMetadataResponse:
    """Versions, platform ``pdeserve/<architecture>`` and the tensor signatures of model ``name`` from
    its card: ``(batch, *grid)`` with every dimension variable (-1); the batch dimension may also be
    left out."""
    shape = [-1] * (card.ndim + 1)

    def tensors(names: list[str]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(name=n, datatype="FP32", shape=shape) for n in names]

    return pb.ModelMetadataResponse(
        name=name,
        versions=versions,
        platform=f"pdeserve/{card.architecture}",
        inputs=tensors(card.input_names),
        outputs=tensors(card.output_names),
    )


def _decode(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> np.ndarray:
    name = tensor.name
    if tensor.datatype not in DATATYPES:
        given = tensor.datatype or "(none)"
        raise InvalidInputError(
            f"input {name!r} has datatype {given}; expected one of {', '.join(DATATYPES)}"
        )
    dtype, field = DATATYPES[tensor.datatype]
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInputError(
                f"input {name!r} has typed contents in a request that uses raw_input_contents; "
                "use one or the other"
            )
        return array_from_bytes(raw, tensor.shape, dtype, name, tensor.datatype)
    shape = checked_shape(tensor.shape, name)
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} needs {count} values in contents.{field}, got {len(values)}"
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def decode_inputs(request: pb.ModelInferRequest, surrogate: Surrogate) -> dict[str, np.ndarray]:
    """The request's input arrays by name; ``InvalidInputError`` for malformed tensors or outputs
    ``surrogate`` does not have (the model itself checks names, ranks, grids and values)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        arrays[tensor.name] = _decode(tensor, raw[i] if raw else None)
    unknown = sorted({o.name for o in request.outputs} - set(surrogate.output_names))
    if unknown:
        raise InvalidInputError(
            f"model {surrogate.name} has no outputs {unknown}; its outputs are {surrogate.output_names}"
        )
    return arrays


def infer_response(
    request: pb.ModelInferRequest, surrogate: Surrogate, outputs: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    """The requested outputs (all when none are named) as FP32 ``raw_output_contents``."""
    response = pb.ModelInferResponse(
        model_name=surrogate.name, model_version=surrogate.version, id=request.id
    )
    for name in [o.name for o in request.outputs] or surrogate.output_names:
        array = np.ascontiguousarray(outputs[name], dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response
