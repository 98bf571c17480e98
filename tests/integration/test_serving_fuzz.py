"""Property-based: no JSON or binary body, gRPC message or model name a client can send makes the
server answer 5xx (REST) or UNKNOWN / INTERNAL (gRPC)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from dlzoo import repository
from dlzoo.records import ExportMetadata
from dlzoo.serve.app import ServeSettings, create_app
from tests.network import free_port
from tests.tiny_repository import MODELS

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
datatypes = st.sampled_from(["FP32", "INT32", "INT64", "UINT8", "BYTES", "BOOL", "FP16"]) | st.text(
    max_size=6
)
numbers = st.integers(-300, 300) | st.floats(allow_nan=False, width=32)
# Requests that look almost right reach the deeper checks (shapes, data, outputs).
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["inputs", "x"]),
        "datatype": datatypes,
        "shape": st.lists(st.integers(-2, 40), max_size=5),
        "data": st.lists(numbers | st.lists(numbers, max_size=4) | st.text(max_size=30), max_size=80)
        | json_values,
    },
    optional={"parameters": json_values},
)
outputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["outputs", "logits"])},
        optional={"parameters": st.fixed_dictionaries({"classification": st.integers(-2, 5) | json_values})},
    ),
    max_size=2,
)
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, min_size=0, max_size=2)}, optional={"outputs": outputs, "id": json_values}
)
model_names = st.sampled_from(list(MODELS)) | st.text(max_size=12)


@st.composite
def near_valid_requests(draw, metadata: ExportMetadata) -> dict:
    """Right names, shapes that are right or one off, data of the right length or not: deep checks."""
    trailing = metadata.inputs[0].shape[1:]
    batch = draw(st.integers(-1, 18))
    shape = [batch, *trailing]
    if draw(st.booleans()):
        shape = draw(st.lists(st.integers(0, 33), max_size=4)) if draw(st.booleans()) else [batch]
    size = max(0, batch) * int(np.prod(trailing))
    length = draw(st.sampled_from([size, size, max(0, size - 1), size + 1]))
    values = st.integers(-3, 300) | st.floats(-1e39, 1e39, allow_nan=False, allow_infinity=False)
    if draw(st.integers(0, 3)):  # a few drawn values repeated to the length (images are big)
        pattern = draw(st.lists(values, min_size=1, max_size=8))
        data = (pattern * (length // len(pattern) + 1))[:length]
    else:
        data = draw(st.lists(st.text(max_size=40), min_size=max(0, batch), max_size=max(0, batch)))
    own = metadata.inputs[0].datatype
    datatype = draw(st.sampled_from([own, own, own, "UINT8", "BYTES", "INT64", "FP64"]))
    body = {"inputs": [{"name": "inputs", "datatype": datatype, "shape": shape, "data": data}]}
    if draw(st.booleans()):
        classification = draw(st.integers(-1, 4) | st.booleans())
        body["outputs"] = [{"name": "outputs", "parameters": {"classification": classification}}]
    return body


@pytest.fixture(scope="module")
def client(tiny_repository: Path):
    with TestClient(create_app(ServeSettings(tiny_repository)), raise_server_exceptions=False) as client:
        yield client


def assert_client_error_or_success(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


@FUZZ
@given(name=st.sampled_from(list(MODELS)), body=requests | json_values)
def test_random_infer_bodies_never_get_a_5xx(client: TestClient, name: str, body):
    assert_client_error_or_success(client.post(f"/v2/models/{name}/infer", content=json.dumps(body)))


@FUZZ
@given(name=st.sampled_from(list(MODELS)), data=st.data())
def test_near_valid_infer_bodies_never_get_a_5xx(client: TestClient, tiny_repository: Path, name: str, data):
    body = data.draw(near_valid_requests(repository.read_metadata(tiny_repository / name)))
    assert_client_error_or_success(client.post(f"/v2/models/{name}/infer", json=body))


@FUZZ
@given(name=model_names, raw=st.binary(max_size=200))
def test_random_bytes_to_any_model_name_never_get_a_5xx(client: TestClient, name: str, raw: bytes):
    assert_client_error_or_success(client.post(f"/v2/models/{quote(name, safe='')}/infer", content=raw))


@FUZZ
@given(name=model_names, version=st.none() | st.text(max_size=4))
def test_random_metadata_requests_never_get_a_5xx(client: TestClient, name: str, version: str | None):
    path = f"/v2/models/{quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{quote(version, safe='')}"
    for suffix in ("", "/ready"):
        assert_client_error_or_success(client.get(path + suffix))
    assert client.get("/v2/health/ready").status_code == 200


@st.composite
def binary_bodies(draw, metadata: ExportMetadata) -> tuple[bytes, str]:
    """A JSON header with binary_data_size (right, off, negative, missing), bytes, and a header length."""
    trailing = metadata.inputs[0].shape[1:]
    own = metadata.inputs[0].datatype
    datatype = draw(st.sampled_from([own, own, "UINT8", "BYTES", "FP64", "INT8"]))
    batch = draw(st.integers(0, 3))
    shape = draw(st.sampled_from([[batch, *trailing], [batch], [batch, 1]]))
    right = batch * int(np.prod(trailing)) * (4 if datatype in ("FP32", "INT32") else 1)
    size = draw(st.sampled_from([right, right, right + 1, max(0, right - 1), -4]) | st.integers(-2, 50))
    parameters = draw(st.sampled_from([{"binary_data_size": size}, {}, {"binary_data_size": str(size)}]))
    tensor = {"name": "inputs", "datatype": datatype, "shape": shape, "parameters": parameters}
    if draw(st.booleans()):
        tensor["data"] = draw(st.lists(numbers, max_size=4))
    body = {"inputs": [tensor]}
    if draw(st.booleans()):
        body["parameters"] = {"binary_data_output": draw(st.booleans() | json_values)}
    if draw(st.booleans()):
        body["outputs"] = [
            {"name": "outputs", "parameters": {"binary_data": draw(st.booleans() | json_values)}}
        ]
    header = json.dumps(body).encode()
    blob_length = draw(st.sampled_from([max(0, size), max(0, size), 0]) | st.integers(0, 64))
    blob = draw(st.binary(min_size=min(blob_length, 64), max_size=min(blob_length, 64)))
    if blob_length > 64:
        blob = (blob * (blob_length // max(1, len(blob)) + 1))[:blob_length]
    length = draw(st.sampled_from([str(len(header)), str(len(header)), "0", str(len(header) + 5), "-1", "x"]))
    return header + blob, length


@FUZZ
@given(name=st.sampled_from(list(MODELS)), data=st.data())
def test_random_binary_bodies_never_get_a_5xx(client: TestClient, tiny_repository: Path, name: str, data):
    body, length = data.draw(binary_bodies(repository.read_metadata(tiny_repository / name)))
    response = client.post(
        f"/v2/models/{name}/infer", content=body, headers={"Inference-Header-Content-Length": length}
    )
    assert_client_error_or_success(response)


@pytest.fixture(scope="module")
def grpc_channel(tiny_repository: Path):
    """The app with its gRPC server, started through the lifespan, and a plain channel to it."""
    port = free_port()
    settings = ServeSettings(tiny_repository, grpc_port=port)
    with (
        TestClient(create_app(settings), raise_server_exceptions=False),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield channel


grpc_datatypes = st.sampled_from(["FP32", "INT32", "UINT8", "BYTES", "INT64", "FP64", "BOOL"]) | st.text(
    max_size=5
)


@st.composite
def grpc_requests(draw) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(
        model_name=draw(model_names), model_version=draw(st.sampled_from(["", "1", "2"]))
    )
    for _ in range(draw(st.integers(0, 2))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["inputs", "x"])),
            datatype=draw(grpc_datatypes),
            shape=draw(st.lists(st.integers(-2, 40) | st.integers(-(2**63), 2**63 - 1), max_size=4)),
        )
        choice = draw(st.integers(0, 3))
        if choice == 0:
            request.raw_input_contents.append(draw(st.binary(max_size=300)))
        elif choice == 1:
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=20)))
        elif choice == 2:
            tensor.contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=20)))
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=20), max_size=3)))
    if draw(st.booleans()):
        output = request.outputs.add(name=draw(st.sampled_from(["outputs", "logits"])))
        output.parameters["classification"].int64_param = draw(st.integers(-3, 5))
    if draw(st.booleans()):
        parameter = request.parameters["timeout"]
        if draw(st.booleans()):
            parameter.int64_param = draw(st.integers(0, 10**7))
        else:
            parameter.string_param = draw(st.text(max_size=5))
    return request


CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def call_grpc(method, request) -> None:
    try:
        method(request, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in CLIENT_CODES, (error.code(), error.details())
        assert error.details()


@FUZZ
@given(request=grpc_requests())
def test_random_grpc_infer_messages_never_get_unknown_or_internal(grpc_channel, request):
    call_grpc(service_pb2_grpc.GRPCInferenceServiceStub(grpc_channel).ModelInfer, request)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_bytes_that_are_no_message_get_invalid_argument(grpc_channel, raw):
    as_bytes = grpc_channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # no serializer
    call_grpc(as_bytes, raw)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc_channel)
    assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready
