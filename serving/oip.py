"""The Open Inference Protocol v2 (``inference.GRPCInferenceService``) in pdeserve's terms.

Mapping: the OIP model name is the pdeserve model name and ``model_version`` its version ("" = newest).
Input tensors are the model's input fields (``FP32`` or ``FP64``, shape ``(*grid)`` or
``(batch, *grid)``), as typed contents (``fp32_contents``/``fp64_contents``) or ``raw_input_contents``;
outputs are the output fields, ``FP32`` (``FP64`` when the request asks for a tolerance), always
answered as ``raw_output_contents`` (what Triton sends and what its clients read).

Every answer's check travels as more outputs, one value per sample in the batch layout (shape
``(batch,)``, or ``()`` for an unbatched request): ``estimated_relative_l2``, ``indicator`` and
``residual`` (``FP64``, NaN where ``Solve``'s ``AnswerCheck`` leaves the field absent) and
``answer_path`` (``BYTES``: ``surrogate``, ``refined`` or ``classical``). They come with the model's
outputs when a request names no outputs, and may be named like them. The response parameters
``estimate_coverage`` (double), ``grid_validated`` (bool) and ``out_of_range_inputs`` (comma-separated
names) carry the rest; the request parameter ``tolerance`` (double) is ``SolveRequest.tolerance``.

Only the replicas import this module (``SolverService`` does, when it starts): tritonclient's generated
modules define the same ``inference.*`` messages in protobuf's default descriptor pool, so a process that
uses Triton's client cannot also import ours, and clients and tests import ``pdeserve.serving.app`` to
deploy it.
"""

from __future__ import annotations

import math
import struct
from importlib.metadata import version as package_version

import numpy as np

from pdeserve.operators.card import ModelCard
from pdeserve.operators.errors import InvalidInputError
from pdeserve.operators.surrogate import Surrogate
from pdeserve.protos.inference import grpc_service_pb2 as pb
from pdeserve.serving.checks import Answer
from pdeserve.serving.errors import MAX_ECHO_CHARS, cut, shown
from pdeserve.serving.tensors import array_from_bytes, checked_shape

SERVER_NAME = "pdeserve"
# OIP datatype -> numpy dtype, and the typed-contents field that carries it.
DATATYPES: dict[str, tuple[np.dtype, str]] = {
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}
# The outputs that carry each sample's check, and their datatypes.
CHECK_OUTPUTS = {
    "estimated_relative_l2": "FP64",
    "indicator": "FP64",
    "residual": "FP64",
    "answer_path": "BYTES",
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

    checks = [
        pb.ModelMetadataResponse.TensorMetadata(name=n, datatype=t, shape=[-1])
        for n, t in CHECK_OUTPUTS.items()
    ]
    return pb.ModelMetadataResponse(
        name=name,
        versions=versions,
        platform=f"pdeserve/{card.architecture}",
        inputs=tensors(card.input_names),
        outputs=[*tensors(card.output_names), *checks],
    )


def number(request: pb.ModelInferRequest, name: str) -> float:
    """The request parameter ``name`` (0 when absent); ``InvalidInputError`` unless it is a number."""
    if name not in request.parameters:
        return 0.0
    parameter = request.parameters[name]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("double_param", "int64_param"):
        raise InvalidInputError(f"parameter {name} is a {kind}; send a double")
    return float(getattr(parameter, kind))


def tolerance(request: pb.ModelInferRequest) -> float:
    """The request parameter ``tolerance`` (0 when absent)."""
    return number(request, "tolerance")


def max_error(request: pb.ModelInferRequest) -> float:
    """The request parameter ``max_error`` (0 when absent): as ``SolveRequest.max_error``, method AUTO."""
    return number(request, "max_error")


def _decode(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> np.ndarray:
    name = tensor.name
    if tensor.datatype not in DATATYPES:
        given = cut(tensor.datatype, MAX_ECHO_CHARS) if tensor.datatype else "(none)"
        raise InvalidInputError(
            f"input {shown(name)} has datatype {given}; expected one of {', '.join(DATATYPES)}"
        )
    dtype, field = DATATYPES[tensor.datatype]
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInputError(
                f"input {shown(name)} has typed contents in a request that uses raw_input_contents; "
                "use one or the other"
            )
        return array_from_bytes(raw, tensor.shape, dtype, name, tensor.datatype)
    shape = checked_shape(tensor.shape, name)
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input {shown(name)}: shape {shape} needs {count} values in contents.{field}, got {len(values)}"
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
            raise InvalidInputError(f"input {shown(tensor.name)} is given twice")
        arrays[tensor.name] = _decode(tensor, raw[i] if raw else None)
    known = [*surrogate.output_names, *CHECK_OUTPUTS]
    unknown = sorted({o.name for o in request.outputs} - set(known))
    if unknown:
        named = ", ".join(shown(name) for name in unknown[:4])
        raise InvalidInputError(f"model {surrogate.name} has no outputs {named}; its outputs are {known}")
    return arrays


def _check_values(checked: Answer, batched: bool) -> dict[str, np.ndarray]:
    """Each check output's values, in the batch layout."""

    def value(x: float | None) -> float:
        return math.nan if x is None else x

    columns = {
        "estimated_relative_l2": [value(c.estimate and c.estimate.relative_l2) for c in checked.checks],
        "indicator": [value(c.estimate and c.estimate.indicator) for c in checked.checks],
        "residual": [value(c.residual) for c in checked.checks],
        "answer_path": [c.path for c in checked.checks],
    }
    return {name: np.array(v if batched else v[0]) for name, v in columns.items()}


def _raw(array: np.ndarray, datatype: str) -> bytes:
    """Row-major bytes of an output: ``BYTES`` elements each behind a 4-byte little-endian length."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(e)) + e for e in (str(x).encode() for x in array.ravel()))
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype][0]).tobytes()


def infer_response(
    request: pb.ModelInferRequest, surrogate: Surrogate, checked: Answer
) -> pb.ModelInferResponse:
    """The requested outputs (all, checks included, when none are named) as ``raw_output_contents``,
    and the request's check parameters."""
    response = pb.ModelInferResponse(
        model_name=surrogate.name, model_version=surrogate.version, id=request.id
    )
    batched = next(iter(checked.outputs.values())).ndim == surrogate.ndim + 1
    arrays = {**checked.outputs, **_check_values(checked, batched)}
    answered = "FP64" if next(iter(checked.outputs.values())).dtype == np.float64 else "FP32"
    datatypes = {**dict.fromkeys(surrogate.output_names, answered), **CHECK_OUTPUTS}
    for name in [o.name for o in request.outputs] or list(datatypes):
        response.outputs.add(name=name, datatype=datatypes[name], shape=arrays[name].shape)
        response.raw_output_contents.append(_raw(arrays[name], datatypes[name]))
    coverage = [c.estimate.coverage for c in checked.checks if c.estimate and c.estimate.coverage]
    response.parameters["estimate_coverage"].double_param = coverage[0] if coverage else 0.0
    response.parameters["grid_validated"].bool_param = checked.grid_validated
    response.parameters["out_of_range_inputs"].string_param = ",".join(checked.out_of_range_inputs)
    return response
