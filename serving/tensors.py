"""Conversion between numpy arrays and ``pdeserve.v1.Tensor`` (raw little-endian bytes + shape + dtype),
and the checks any raw-bytes tensor on the wire needs (shared with the Open Inference Protocol).

The light client uses it too: it imports numpy and the generated messages only (no torch, no Ray)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pdeserve.operators.errors import InvalidInputError
from pdeserve.protos.v1 import solver_pb2 as pb

NUMPY_DTYPES: dict[int, np.dtype] = {pb.DTYPE_FLOAT32: np.dtype("<f4"), pb.DTYPE_FLOAT64: np.dtype("<f8")}
PROTO_DTYPES: dict[np.dtype, int] = {v: k for k, v in NUMPY_DTYPES.items()}
# Most dimensions of a tensor on the wire (numpy stops at 64), and most elements its non-zero dimensions
# may multiply to: far above any request size limit, and below what numpy can index even when a zero
# dimension makes the tensor empty.
MAX_RANK = 32
MAX_ELEMENTS = 2**48


def to_tensor(array: np.ndarray) -> pb.Tensor:
    """A Tensor message holding ``array`` (float32 or float64) as little-endian, row-major bytes."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<")
    if dtype not in PROTO_DTYPES:
        raise ValueError(f"only float32 and float64 tensors travel over the wire, got {array.dtype}")
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return pb.Tensor(shape=list(array.shape), dtype=PROTO_DTYPES[dtype], data=data)


def from_tensor(tensor: pb.Tensor, name: str) -> np.ndarray:
    """The array in ``tensor``; ``InvalidInputError`` naming ``name`` if dtype, shape and bytes disagree."""
    if tensor.dtype not in NUMPY_DTYPES:
        allowed = ", ".join(pb.DType.Name(d) for d in NUMPY_DTYPES)
        given = pb.DType.Name(tensor.dtype) if tensor.dtype in pb.DType.values() else str(tensor.dtype)
        raise InvalidInputError(f"input {name!r} has dtype {given}; expected one of {allowed}")
    return array_from_bytes(
        tensor.data, tensor.shape, NUMPY_DTYPES[tensor.dtype], name, pb.DType.Name(tensor.dtype)
    )


def checked_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    """``shape`` as a tuple; ``InvalidInputError`` naming input ``name`` if a dimension is negative, it
    has more than :data:`MAX_RANK` dimensions, or its non-zero dimensions multiply to more than
    :data:`MAX_ELEMENTS`."""
    if len(shape) > MAX_RANK:
        raise InvalidInputError(f"input {name!r} has {len(shape)} dimensions; at most {MAX_RANK} are allowed")
    shape = tuple(shape)
    if any(s < 0 for s in shape):
        raise InvalidInputError(f"input {name!r} has a negative dimension in shape {shape}")
    if math.prod(s for s in shape if s) > MAX_ELEMENTS:
        raise InvalidInputError(f"input {name!r} has shape {shape}: more than {MAX_ELEMENTS} elements")
    return shape


def array_from_bytes(
    data: bytes, shape: Sequence[int], dtype: np.dtype, name: str, dtype_name: str
) -> np.ndarray:
    """The array of ``shape`` held in the row-major bytes ``data`` (read as ``dtype``, which the wire
    calls ``dtype_name``); ``InvalidInputError`` naming input ``name`` if the byte count disagrees."""
    shape = checked_shape(shape, name)
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} as {dtype_name} needs {expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)
