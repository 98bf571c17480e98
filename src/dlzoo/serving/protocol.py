"""Open Inference Protocol v2 (KServe / Triton REST) requests and responses, in JSON.

A request is checked completely before it reaches ONNX Runtime: every client mistake becomes an
`InferenceError` with a 4xx status and a message that says what was wrong, never a 5xx.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from dlzoo.evaluate import probabilities
from dlzoo.serving.models import CLASSIFIER_KINDS, NUMPY_DTYPES, ServedModel


class InferenceError(Exception):
    """A client mistake: `status` is the HTTP status (4xx), the message goes back as `error`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # top-k "probability:index:label" strings instead of the tensor


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    batch: np.ndarray  # model-ready: the model's datatype and shape, batch first
    outputs: tuple[RequestedOutput, ...]


def _reject_constant(name: str) -> float:
    raise InferenceError(f"{name} is not a number JSON allows; send finite numbers only")


def decode_json(body: bytes) -> Any:
    """orjson (3x faster on number arrays); what it refuses, the standard library explains."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InferenceError(f"the request body is not valid JSON: {error}") from None


def parse_infer_request(body: Any, model: ServedModel) -> InferRequest:
    if not isinstance(body, dict):
        raise InferenceError("the request body must be a JSON object with an `inputs` list")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceError("`id` must be a string")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InferenceError(
            f"`inputs` must be a list with exactly one tensor, named {model.input.name!r}; "
            f"see GET /v2/models/{model.name}"
        )
    batch = _input_batch(inputs[0], model)
    return InferRequest(request_id, batch, _requested_outputs(body.get("outputs"), model))


def _input_batch(tensor: Any, model: ServedModel) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise InferenceError("each input must be an object with name, shape, datatype and data")
    if tensor.get("name") != model.input.name:
        raise InferenceError(
            f"unknown input {tensor.get('name')!r}; model {model.name} has {model.input.name!r}"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise InferenceError("`shape` must be a list of non-negative integers")
    datatype = tensor.get("datatype")
    accepted = [model.input.datatype, *([model.raw_datatype] if model.raw_datatype else [])]
    if datatype not in accepted:
        raise InferenceError(
            f"datatype {datatype!r} is not accepted by {model.name}; send {' or '.join(accepted)}"
        )
    parameters = tensor.get("parameters") or {}
    if isinstance(parameters, dict) and "binary_data_size" in parameters:
        raise InferenceError(
            "binary tensor data is not supported; send JSON data (tritonclient: binary_data=False)"
        )
    if datatype == "BYTES":
        return _text_batch(tensor.get("data"), shape, model)
    expected_shape = [*model.input.shape[1:]]
    if not shape or shape[1:] != expected_shape:
        raise InferenceError(
            f"input shape {shape} does not match the model's [-1, {', '.join(map(str, expected_shape))}]"
        )
    _check_batch(shape[0], model)
    values = _numeric_data(tensor.get("data"), shape)
    if datatype == "UINT8":
        if values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
            raise InferenceError("UINT8 data must be integers from 0 to 255")
        # Image models rescale (and resize) raw pixels themselves; the server only casts them.
        return values.astype(np.float32)
    return _cast(values, datatype, model)


def _check_batch(size: int, model: ServedModel) -> None:
    if size < 1:
        raise InferenceError("the batch (the first dimension of `shape`) must hold at least one sample")
    if size > model.max_batch_size:
        raise InferenceError(
            f"batch of {size} is over the maximum of {model.max_batch_size} for {model.name}; split it"
        )


def _numeric_data(data: Any, shape: list[int]) -> np.ndarray:
    if not isinstance(data, list):
        raise InferenceError("`data` must be a list of numbers, flat or nested to match `shape`")
    try:
        values = np.asarray(data)
    except (ValueError, OverflowError):
        raise InferenceError("`data` is ragged or holds values that are not numbers") from None
    if values.dtype.kind not in "iuf":
        raise InferenceError("`data` must hold only numbers, not strings, booleans, nulls or objects")
    count = math.prod(shape)
    if values.shape != tuple(shape) and not (values.ndim == 1 and values.size == count):
        raise InferenceError(
            f"`data` has shape {list(values.shape)} ({values.size} values); `shape` {shape} needs {count}"
        )
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InferenceError("`data` holds NaN or infinite values; send finite numbers only")
    return values.reshape(shape)


def _cast(values: np.ndarray, datatype: str, model: ServedModel) -> np.ndarray:
    dtype = NUMPY_DTYPES[datatype]
    if np.issubdtype(dtype, np.integer):
        if values.dtype.kind == "f" and not np.all(values == np.round(values)):
            raise InferenceError(f"{datatype} data must be whole numbers")
        limits = np.iinfo(dtype)
        if values.min() < limits.min or values.max() > limits.max:
            raise InferenceError(f"{datatype} data out of range [{limits.min}, {limits.max}]")
        vocab_size = model.preprocessing.get("vocab_size")
        if vocab_size and (values.min() < 0 or values.max() >= vocab_size):
            raise InferenceError(f"token ids must lie in [0, {vocab_size}) for {model.name}")
    elif np.abs(values).max(initial=0) > np.finfo(dtype).max:
        raise InferenceError(f"{datatype} data out of range")
    return values.astype(dtype)


def _text_batch(data: Any, shape: list[int], model: ServedModel) -> np.ndarray:
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InferenceError(f"BYTES input shape must be [batch] or [batch, 1], got {shape}")
    _check_batch(shape[0], model)
    texts = _flatten(data)
    if texts is None or not all(isinstance(text, str) for text in texts):
        raise InferenceError("BYTES `data` must be a list of review texts (JSON strings)")
    if len(texts) != shape[0]:
        raise InferenceError(f"`data` has {len(texts)} texts; `shape` {shape} needs {shape[0]}")
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


def _requested_outputs(outputs: Any, model: ServedModel) -> tuple[RequestedOutput, ...]:
    if outputs is None:
        return tuple(RequestedOutput(output.name) for output in model.outputs)
    if not isinstance(outputs, list) or not outputs:
        raise InferenceError("`outputs` must be a non-empty list of {name, parameters} objects")
    known = {output.name for output in model.outputs}
    requested = []
    for entry in outputs:
        if not isinstance(entry, dict) or entry.get("name") not in known:
            name = entry.get("name") if isinstance(entry, dict) else entry
            raise InferenceError(
                f"unknown output {name!r}; model {model.name} has {', '.join(sorted(known))}"
            )
        parameters = entry.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InferenceError("output `parameters` must be an object")
        classification = parameters.get("classification", 0)
        if type(classification) is not int or classification < 0:
            raise InferenceError(
                "`classification` must be a non-negative integer (the number of top classes)"
            )
        if classification and model.kind not in CLASSIFIER_KINDS:
            raise InferenceError(f"{model.name} is a {model.kind} model; classification needs a classifier")
        requested.append(RequestedOutput(entry["name"], classification))
    return tuple(requested)


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


def response(model: ServedModel, request: InferRequest, results: dict[str, np.ndarray]) -> dict[str, Any]:
    datatypes = {output.name: output.datatype for output in model.outputs}
    outputs = []
    for requested in request.outputs:
        values = results[requested.name]
        if requested.classification:
            values = classify(values, requested.classification, model.labels)
            datatype, data = "BYTES", values.ravel().tolist()
        else:
            datatype, data = datatypes[requested.name], values.ravel().tolist()
        outputs.append(
            {"name": requested.name, "datatype": datatype, "shape": list(values.shape), "data": data}
        )
    body = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    return body
