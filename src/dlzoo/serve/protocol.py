"""Open Inference Protocol v2 requests and responses, the same for REST (JSON or binary) and gRPC.

A transport decodes its message into `InputTensor`s and `RequestedOutput`s; `prepare` checks
them against the model and makes the model-ready batch; `output_tensors` turns the results
into what was asked for. Every client mistake becomes an `InferenceError` with a 4xx status
and a message that says what was wrong, before anything reaches ONNX Runtime.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from dlzoo.problems import CLASSIFICATION, probabilities
from dlzoo.serve import tensors
from dlzoo.serve.errors import InferenceError
from dlzoo.serve.sessions import ServedModel

__all__ = ["InferenceError"]


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: Any  # numbers: an array or (JSON) nested lists; BYTES: a flat list of str or bytes


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # top-k "probability:index:label" strings instead of the tensor
    binary: bool = False  # REST: in the binary part of the body (gRPC answers raw bytes always)


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    batch: np.ndarray  # model-ready: the model's datatype and shape, batch first
    outputs: tuple[RequestedOutput, ...]
    timeout_s: float | None = None  # the client's own limit (`timeout` in microseconds), if any


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    values: np.ndarray
    binary: bool


# ---- checks against the model, for every transport ---------------------------------------------


def prepare(model: ServedModel, inputs: list[InputTensor]) -> np.ndarray:
    if len(inputs) != 1:
        raise InferenceError(
            f"model {model.name} has one input, {model.input.name!r}; the request has {len(inputs)} "
            f"inputs; see GET /v2/models/{model.name}"
        )
    (tensor,) = inputs
    if tensor.name != model.input.name:
        raise InferenceError(f"unknown input {tensor.name!r}; model {model.name} has {model.input.name!r}")
    accepted = [model.input.datatype, *([model.raw_datatype] if model.raw_datatype else [])]
    if tensor.datatype not in accepted:
        raise InferenceError(
            f"datatype {tensor.datatype!r} is not accepted by {model.name}; send {' or '.join(accepted)}"
        )
    if tensor.datatype == "BYTES":
        return _text_batch(tensor, model)
    expected_shape = [*model.input.shape[1:]]
    if not tensor.shape or tensor.shape[1:] != expected_shape:
        raise InferenceError(
            f"input shape {tensor.shape} does not match the model's "
            f"[-1, {', '.join(map(str, expected_shape))}]"
        )
    _check_batch(tensor.shape[0], model)
    values = _numbers(tensor.data, tensor.shape)
    if tensor.datatype == "UINT8":
        if values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
            raise InferenceError("UINT8 data must be integers from 0 to 255")
        # Image models rescale (and resize) raw pixels themselves; the server only casts them.
        return values.astype(np.float32)
    return _cast(values, tensor.datatype, model)


def _check_batch(size: int, model: ServedModel) -> None:
    if size < 1:
        raise InferenceError("the batch (the first dimension of `shape`) must hold at least one sample")
    if size > model.max_batch_size:
        raise InferenceError(
            f"batch of {size} is over the maximum of {model.max_batch_size} for {model.name}; split it"
        )


def _numbers(data: Any, shape: list[int]) -> np.ndarray:
    if isinstance(data, np.ndarray):  # binary or gRPC: already the declared datatype and shape
        values = data
    else:
        if not isinstance(data, list):
            raise InferenceError("`data` must be a list of numbers, flat or nested to match `shape`")
        try:
            values = np.asarray(data)
        except (ValueError, OverflowError):
            raise InferenceError("`data` is ragged or holds values that are not numbers") from None
        if values.dtype.kind not in "iuf":
            raise InferenceError(
                "`data` must hold only numbers (within 64 bits), not strings, booleans, nulls or objects"
            )
    count = math.prod(shape)
    if values.shape != tuple(shape) and not (values.ndim == 1 and values.size == count):
        raise InferenceError(
            f"`data` has shape {list(values.shape)} ({values.size} values); `shape` {shape} needs {count}"
        )
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InferenceError("`data` holds NaN or infinite values; send finite numbers only")
    return values.reshape(shape)


def _cast(values: np.ndarray, datatype: str, model: ServedModel) -> np.ndarray:
    dtype = tensors.NUMPY_DTYPES[datatype]
    if np.issubdtype(dtype, np.integer):
        if values.dtype.kind == "f" and not np.all(values == np.round(values)):
            raise InferenceError(f"{datatype} data must be whole numbers")
        limits = np.iinfo(dtype)
        if values.min() < limits.min or values.max() > limits.max:
            raise InferenceError(f"{datatype} data out of range [{limits.min}, {limits.max}]")
        vocab_size = getattr(model.preprocessing, "vocab_size", None)
        if vocab_size and (values.min() < 0 or values.max() >= vocab_size):
            raise InferenceError(f"token ids must lie in [0, {vocab_size}) for {model.name}")
    elif np.abs(values).max(initial=0) > np.finfo(dtype).max:
        raise InferenceError(f"{datatype} data out of range")
    return values.astype(dtype, copy=False)


def _text_batch(tensor: InputTensor, model: ServedModel) -> np.ndarray:
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InferenceError(f"BYTES input shape must be [batch] or [batch, 1], got {shape}")
    _check_batch(shape[0], model)
    texts = _flatten(tensor.data)
    if texts is None or not all(isinstance(text, str | bytes) for text in texts):
        raise InferenceError("BYTES `data` must be a list of review texts (JSON strings)")
    if len(texts) != shape[0]:
        raise InferenceError(f"`data` has {len(texts)} texts; `shape` {shape} needs {shape[0]}")
    try:
        texts = [text.decode("utf-8") if isinstance(text, bytes) else text for text in texts]
    except UnicodeDecodeError as error:
        raise InferenceError(f"BYTES input {tensor.name!r} is not UTF-8 text: {error}") from None
    return model.encode_text(texts)


def _flatten(data: Any) -> list | None:
    if not isinstance(data, list):
        return None
    flat = []
    for item in data:
        if isinstance(item, list):
            if len(item) != 1:
                return None
            item = item[0]
        flat.append(item)
    return flat


def requested_output(model: ServedModel, name: Any, classification: Any, binary: bool) -> RequestedOutput:
    known = {output.name for output in model.outputs}
    if name not in known:
        raise InferenceError(f"unknown output {name!r}; model {model.name} has {', '.join(sorted(known))}")
    if type(classification) is not int or classification < 0:
        raise InferenceError("`classification` must be a non-negative integer (the number of top classes)")
    if classification and model.problem not in CLASSIFICATION:
        raise InferenceError(f"{model.name} is a {model.problem} model; classification needs a classifier")
    return RequestedOutput(name, classification, binary)


def all_outputs(model: ServedModel, binary: bool) -> tuple[RequestedOutput, ...]:
    return tuple(RequestedOutput(output.name, 0, binary) for output in model.outputs)


def timeout_seconds(value: Any) -> float | None:
    """Triton's `timeout` request parameter, in microseconds; 0 (or none) means no limit of its own."""
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise InferenceError("the `timeout` parameter must be a non-negative integer of microseconds")
    return value / 1e6 or None


# ---- results -----------------------------------------------------------------------------------


def classify(values: np.ndarray, top: int, labels: list[str] | None) -> np.ndarray:
    """Triton's classification extension: "probability:index:label" strings, best first."""
    scores = probabilities(values)
    top = min(top, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    names = labels or [str(index) for index in range(scores.shape[1])]
    return np.array(
        [
            [f"{row[index]:.6f}:{index}:{names[index]}" for index in indices]
            for row, indices in zip(scores, order, strict=True)
        ],
        dtype=object,
    )


def output_tensors(
    model: ServedModel, request: InferRequest, results: dict[str, np.ndarray]
) -> list[OutputTensor]:
    datatypes = {output.name: output.datatype for output in model.outputs}
    answer = []
    for requested in request.outputs:
        values = results[requested.name]
        if requested.classification:
            answer.append(
                OutputTensor(
                    requested.name,
                    "BYTES",
                    classify(values, requested.classification, model.labels),
                    requested.binary,
                )
            )
        else:
            answer.append(OutputTensor(requested.name, datatypes[requested.name], values, requested.binary))
    return answer


# ---- REST: JSON bodies and the binary tensor data extension ------------------------------------


def _reject_constant(name: str) -> float:
    raise InferenceError(f"{name} is not a number JSON allows; send finite numbers only")


def decode_json(body: bytes | memoryview) -> Any:
    """orjson (3x faster on number arrays); what it refuses, the standard library explains."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(bytes(body), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InferenceError(f"the request body is not valid JSON: {error}") from None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise InferenceError(f"the request body holds a value JSON parsing refuses: {error}") from None


def parse_rest(body: bytes, header_length: str | None, model: ServedModel) -> InferRequest:
    """A REST infer body: JSON, or a JSON header followed by tensor bytes, or (header 0) raw bytes."""
    if header_length is None:
        return _parse_rest_json(decode_json(body), memoryview(b""), model, binary_allowed=False)
    if not header_length.isdigit():
        raise InferenceError(
            f"Inference-Header-Content-Length must be a non-negative integer, got {header_length!r}"
        )
    size = int(header_length)
    if size > len(body):
        raise InferenceError(
            f"Inference-Header-Content-Length is {size} but the body holds only {len(body)} bytes"
        )
    if size == 0:
        return _parse_raw_binary(body, model)
    view = memoryview(body)
    return _parse_rest_json(decode_json(view[:size]), view[size:], model, binary_allowed=True)


def _parse_raw_binary(body: bytes, model: ServedModel) -> InferRequest:
    """Header length 0: the whole body is the single input, one sample, in the declared datatype."""
    shape = [1, *model.input.shape[1:]]
    data = tensors.from_bytes(body, model.input.datatype, shape, model.input.name)
    batch = prepare(model, [InputTensor(model.input.name, model.input.datatype, shape, data)])
    return InferRequest(None, batch, all_outputs(model, binary=True))


def _parse_rest_json(body: Any, blob: memoryview, model: ServedModel, binary_allowed: bool) -> InferRequest:
    if not isinstance(body, dict):
        raise InferenceError("the request body must be a JSON object with an `inputs` list")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceError("`id` must be a string")
    parameters = _parameters(body.get("parameters"), "request")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InferenceError("the `binary_data_output` parameter must be true or false")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferenceError(
            f"`inputs` must be a non-empty list of tensors; model {model.name} takes "
            f"{model.input.name!r}; see GET /v2/models/{model.name}"
        )
    decoded, offset = [], 0
    for entry in inputs:
        tensor, offset = _json_input(entry, blob, offset, binary_allowed)
        decoded.append(tensor)
    if offset != len(blob):
        raise InferenceError(
            f"the body has {len(blob) - offset} bytes after the last input's binary data; "
            "binary_data_size must add up to the bytes after the JSON header"
        )
    batch = prepare(model, decoded)
    outputs = _rest_outputs(body.get("outputs"), model, binary_output)
    return InferRequest(request_id, batch, outputs, timeout_seconds(parameters.get("timeout")))


def _parameters(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InferenceError(f"{where} `parameters` must be an object")
    return value


def _json_input(entry: Any, blob: memoryview, offset: int, binary_allowed: bool) -> tuple[InputTensor, int]:
    if not isinstance(entry, dict):
        raise InferenceError("each input must be an object with name, shape, datatype and data")
    name = entry.get("name")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise InferenceError(f"input {name!r}: `shape` must be a list of non-negative integers")
    datatype = entry.get("datatype")
    if datatype not in tensors.DATATYPES:
        raise InferenceError(
            f"input {name!r}: unknown datatype {datatype!r}; one of {', '.join(tensors.DATATYPES)}"
        )
    parameters = _parameters(entry.get("parameters"), f"input {name!r}")
    size = parameters.get("binary_data_size")
    has_data = "data" in entry
    if size is None:
        if not has_data:
            raise InferenceError(f"input {name!r} has neither `data` nor a `binary_data_size` parameter")
        return InputTensor(name, datatype, shape, entry["data"]), offset
    if has_data:
        raise InferenceError(f"input {name!r} has both `data` and `binary_data_size`; send one of them")
    if not binary_allowed:
        raise InferenceError(
            f"input {name!r} has binary_data_size but the request has no Inference-Header-Content-Length "
            "header saying where the JSON ends"
        )
    if type(size) is not int or size < 0:
        raise InferenceError(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
    if offset + size > len(blob):
        raise InferenceError(
            f"input {name!r}: binary_data_size {size} at byte {offset} runs past the {len(blob)} bytes "
            "after the JSON header"
        )
    data = tensors.from_bytes(blob[offset : offset + size], datatype, shape, str(name))
    return InputTensor(name, datatype, shape, data), offset + size


def _rest_outputs(outputs: Any, model: ServedModel, binary_default: bool) -> tuple[RequestedOutput, ...]:
    if outputs is None:
        return all_outputs(model, binary_default)
    if not isinstance(outputs, list) or not outputs:
        raise InferenceError("`outputs` must be a non-empty list of {name, parameters} objects")
    requested = []
    for entry in outputs:
        if not isinstance(entry, dict):
            raise InferenceError(f"each output must be an object with a name, got {entry!r}")
        parameters = _parameters(entry.get("parameters"), f"output {entry.get('name')!r}")
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise InferenceError("an output's `binary_data` parameter must be true or false")
        requested.append(
            requested_output(model, entry.get("name"), parameters.get("classification", 0), binary)
        )
    return tuple(requested)


def rest_response(model: ServedModel, request: InferRequest, results: dict) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    outputs, blobs = [], []
    for tensor in output_tensors(model, request, results):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.values.shape),
        }
        if tensor.binary:
            raw = tensors.to_bytes(tensor.values, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif tensor.datatype == "BYTES":
            entry["data"] = tensor.values.ravel().tolist()
        else:
            entry["data"] = np.ascontiguousarray(tensor.values).ravel()
        outputs.append(entry)
    body = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
