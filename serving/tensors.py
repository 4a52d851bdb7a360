"""Conversion between numpy arrays and ``pdeserve.v1.Tensor`` (raw little-endian bytes + shape + dtype)."""

from __future__ import annotations

import math

import numpy as np

from pdeserve.operators.surrogate import InvalidInputError
from pdeserve.protos.v1 import solver_pb2 as pb

NUMPY_DTYPES: dict[int, np.dtype] = {pb.DTYPE_FLOAT32: np.dtype("<f4"), pb.DTYPE_FLOAT64: np.dtype("<f8")}
PROTO_DTYPES: dict[np.dtype, int] = {v: k for k, v in NUMPY_DTYPES.items()}


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
    shape = tuple(tensor.shape)
    if any(s < 0 for s in shape):
        raise InvalidInputError(f"input {name!r} has a negative dimension in shape {shape}")
    dtype = NUMPY_DTYPES[tensor.dtype]
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} as {pb.DType.Name(tensor.dtype)} needs {expected} "
            f"bytes, got {len(tensor.data)}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
