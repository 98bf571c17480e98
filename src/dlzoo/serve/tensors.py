"""Tensor bytes as the Open Inference Protocol sends them: the binary extension and gRPC raw contents.

Fixed-size datatypes are little-endian, row-major. A BYTES tensor is its elements one after
another, each a 4-byte little-endian length followed by that many bytes (Triton's and KServe's
layout, the one `tritonclient.utils.serialize_byte_tensor` writes).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from dlzoo.serve.errors import InferenceError

# Open Inference Protocol datatypes as little-endian numpy dtypes; BYTES is handled apart.
NUMPY_DTYPES = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMPY_DTYPES, "BYTES")
_LENGTH = struct.Struct("<I")


def from_bytes(raw: bytes | memoryview, datatype: str, shape: list[int], name: str) -> np.ndarray | list:
    """The tensor `raw` holds: an array, or for BYTES a flat list of the elements' bytes."""
    count = math.prod(shape)
    if datatype == "BYTES":
        elements = split_bytes(raw, name)
        if len(elements) != count:
            raise InferenceError(
                f"input {name!r}: the binary BYTES data holds {len(elements)} elements; shape {shape} "
                f"needs {count}"
            )
        return elements
    dtype = NUMPY_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InferenceError(
            f"input {name!r}: {len(raw)} bytes of binary data; shape {shape} x {datatype} "
            f"({dtype.itemsize} bytes each) needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def split_bytes(raw: bytes | memoryview, name: str) -> list[bytes]:
    view, elements, offset = memoryview(raw), [], 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InferenceError(
                f"input {name!r}: BYTES data ends inside a 4-byte length prefix at byte {offset}"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InferenceError(
                f"input {name!r}: a BYTES element of {length} bytes at byte {offset} runs past the "
                f"end of the data ({len(view)} bytes)"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


def to_bytes(values: np.ndarray, datatype: str) -> bytes:
    """The binary form of an output tensor (numbers as little-endian, strings length-prefixed)."""
    if datatype == "BYTES":
        parts = []
        for item in values.ravel():
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=NUMPY_DTYPES[datatype]).tobytes()
