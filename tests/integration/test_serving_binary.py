"""The binary tensor data extension, model configuration and the server's limits, in process.

Request bodies are made by tritonclient's own `generate_request_body` (at its defaults: binary
inputs, and with no outputs named it asks for binary outputs), answers read by its own
`parse_response_body`: the same bytes its HTTP client sends and reads.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from dlzoo import repository
from dlzoo.serve import protocol
from dlzoo.serve.app import ServeSettings, create_app
from dlzoo.serve.sessions import load_repository
from tests.tiny_repository import MODELS, REVIEWS, valid_batch

pytestmark = pytest.mark.integration
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(tiny_repository: Path):
    with TestClient(create_app(ServeSettings(tiny_repository))) as client:
        yield client


def reference(root: Path, name: str, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        root / name / "1" / "model.onnx", providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"inputs": batch})[0]


def send(client: TestClient, name: str, inputs, outputs=None, **options):
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **options)
    headers = {HEADER: str(json_size)} if json_size is not None else {}
    return client.post(f"/v2/models/{name}/infer", content=body, headers=headers)


def result(response) -> triton.InferResult:
    assert response.status_code == 200, response.text
    length = response.headers.get(HEADER)
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length is not None else None
    )


def binary_input(datatype: str, values: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("inputs", list(values.shape), datatype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


def model_batch(root: Path, name: str, count: int) -> tuple[str, np.ndarray]:
    datatype, _, values = valid_batch(repository.read_metadata(root / name), count, np.random.default_rng(4))
    return datatype, values.astype(np.int32 if datatype == "INT32" else np.float32)


def test_the_server_lists_the_binary_and_configuration_extensions(client):
    assert {"binary_tensor_data", "model_configuration"} <= set(client.get("/v2").json()["extensions"])


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_answers_binary_requests_in_binary_like_onnx_runtime(client, tiny_repository, name):
    datatype, values = model_batch(tiny_repository, name, 3)
    response = send(client, name, [binary_input(datatype, values)], request_id="b-1")
    assert response.headers["content-type"] == "application/octet-stream"
    answer = result(response)
    expected = reference(tiny_repository, name, values)
    output = answer.get_output("outputs")
    assert output["parameters"]["binary_data_size"] == expected.nbytes and "data" not in output
    np.testing.assert_allclose(answer.as_numpy("outputs"), expected, rtol=1e-6, atol=1e-7)
    assert answer.get_response()["id"] == "b-1"


def test_json_outputs_can_be_asked_for_binary_inputs_and_the_reverse(client, tiny_repository):
    datatype, values = model_batch(tiny_repository, "cnn_image", 2)
    expected = reference(tiny_repository, "cnn_image", values)
    as_json = triton.InferRequestedOutput("outputs", binary_data=False)
    answer = send(client, "cnn_image", [binary_input(datatype, values)], outputs=[as_json])
    assert HEADER not in answer.headers and "data" in answer.json()["outputs"][0]
    np.testing.assert_allclose(result(answer).as_numpy("outputs"), expected, rtol=1e-6, atol=1e-7)
    as_binary = triton.InferRequestedOutput("outputs")  # binary_data=True, tritonclient's default
    answer = send(client, "cnn_image", [binary_input(datatype, values, binary=False)], outputs=[as_binary])
    np.testing.assert_allclose(result(answer).as_numpy("outputs"), expected, rtol=1e-6, atol=1e-7)


def test_raw_text_and_uint8_images_work_in_binary_form(client, tiny_repository):
    texts = np.array([[review.encode()] for review in REVIEWS], dtype=object)
    binary = result(send(client, "rnn_text", [binary_input("BYTES", texts)])).as_numpy("outputs")
    as_json = client.post(
        "/v2/models/rnn_text/infer",
        json={"inputs": [{"name": "inputs", "datatype": "BYTES", "shape": [len(REVIEWS)], "data": REVIEWS}]},
    )
    np.testing.assert_allclose(binary.ravel(), as_json.json()["outputs"][0]["data"], rtol=1e-6)
    pixels = np.random.default_rng(5).integers(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    as_uint8 = result(send(client, "cnn_image", [binary_input("UINT8", pixels)])).as_numpy("outputs")
    np.testing.assert_allclose(
        as_uint8, reference(tiny_repository, "cnn_image", pixels.astype(np.float32)), rtol=1e-6
    )


def test_classification_answers_in_binary_bytes(client):
    texts = np.array([[REVIEWS[0].encode()]], dtype=object)
    top = triton.InferRequestedOutput("outputs", class_count=2)
    classes = result(send(client, "transformer_text", [binary_input("BYTES", texts)], outputs=[top]))
    entries = [entry.decode() for entry in classes.as_numpy("outputs").ravel()]
    assert {entry.split(":", 1)[1] for entry in entries} == {"0:negative", "1:positive"}


def test_a_raw_binary_body_is_the_single_input_of_one_sample(client, tiny_repository):
    _, values = model_batch(tiny_repository, "cnn_image", 1)
    response = client.post("/v2/models/cnn_image/infer", content=values.tobytes(), headers={HEADER: "0"})
    np.testing.assert_allclose(
        result(response).as_numpy("outputs"),
        reference(tiny_repository, "cnn_image", values),
        rtol=1e-6,
        atol=1e-7,
    )
    short = client.post("/v2/models/cnn_image/infer", content=values.tobytes()[:-4], headers={HEADER: "0"})
    assert short.status_code == 400 and "needs 12288" in short.json()["error"]


def test_one_request_may_mix_json_data_and_binary_inputs():
    """Decoding is per input, in order; the models here have one input, so this checks the decoder."""
    binary = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = {
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [2], "data": [4, 5]},
            {"name": "b", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
            {"name": "c", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}},
        ]
    }
    blob = memoryview(binary.tobytes() + struct.pack("<I", 3) + b"abc")
    tensors, offset = [], 0
    for entry in header["inputs"]:
        tensor, offset = protocol._json_input(entry, blob, offset, binary_allowed=True)
        tensors.append(tensor)
    assert offset == len(blob)
    assert tensors[0].data == [4, 5]
    np.testing.assert_array_equal(tensors[1].data, binary)
    assert tensors[2].data == [b"abc"]


def _header(inputs: list[dict], **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def _binary_tensor(size, shape=(1, 2), datatype="FP32") -> dict:
    return {
        "name": "inputs",
        "datatype": datatype,
        "shape": list(shape),
        "parameters": {"binary_data_size": size},
    }


ZEROS = np.zeros(2, np.float32).tobytes()
MALFORMED_BINARY = {
    "header longer than the body": ("mlp_vector", _header([_binary_tensor(8)]), b"", 10_000, "holds only"),
    "header length not a number": (
        "mlp_vector",
        _header([_binary_tensor(8)]),
        ZEROS,
        "ten",
        "non-negative integer",
    ),
    "size not shape x datatype": ("mlp_vector", _header([_binary_tensor(4)]), b"\0" * 4, None, "needs 8"),
    "a negative size": ("mlp_vector", _header([_binary_tensor(-8)]), ZEROS, None, "non-negative integer"),
    "a size that is not an integer": (
        "mlp_vector",
        _header([_binary_tensor("8")]),
        ZEROS,
        None,
        "non-negative",
    ),
    "neither data nor size": (
        "mlp_vector",
        _header([{"name": "inputs", "datatype": "FP32", "shape": [1, 2]}]),
        ZEROS,
        None,
        "neither `data` nor",
    ),
    "both data and size": (
        "mlp_vector",
        _header([{**_binary_tensor(8), "data": [0, 0]}]),
        ZEROS,
        None,
        "both `data` and",
    ),
    "trailing bytes": (
        "mlp_vector",
        _header([_binary_tensor(8)]),
        ZEROS + b"\0",
        None,
        "1 bytes after the last",
    ),
    "size past the end": ("mlp_vector", _header([_binary_tensor(16)]), ZEROS, None, "runs past the 8 bytes"),
    "a BYTES length prefix past the end": (
        "rnn_text",
        _header([_binary_tensor(9, shape=[1], datatype="BYTES")]),
        struct.pack("<I", 50) + b"short",
        None,
        "runs past the end",
    ),
    "a BYTES body cut inside a prefix": (
        "rnn_text",
        _header([_binary_tensor(6, shape=[1], datatype="BYTES")]),
        struct.pack("<I", 1) + b"a" + b"\0",
        None,
        "inside a 4-byte length prefix",
    ),
    "BYTES that are not UTF-8": (
        "rnn_text",
        _header([_binary_tensor(6, shape=[1], datatype="BYTES")]),
        struct.pack("<I", 2) + b"\xff\xfe",
        None,
        "not UTF-8",
    ),
    "an element count not matching the shape": (
        "rnn_text",
        _header([_binary_tensor(5, shape=[2], datatype="BYTES")]),
        struct.pack("<I", 1) + b"a",
        None,
        "holds 1 elements",
    ),
    "NaN in binary": (
        "mlp_vector",
        _header([_binary_tensor(8)]),
        np.array([np.nan, 0], np.float32).tobytes(),
        None,
        "NaN",
    ),
    "binary_data_output not a boolean": (
        "mlp_vector",
        _header([_binary_tensor(8)], parameters={"binary_data_output": "yes"}),
        ZEROS,
        None,
        "true or false",
    ),
    "a header that is not JSON": ("mlp_vector", b"{inputs", ZEROS, None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(MALFORMED_BINARY))
def test_malformed_binary_requests_get_a_400_that_says_what_is_wrong(client, case):
    name, header, blob, length, message = MALFORMED_BINARY[case]
    headers = {HEADER: str(len(header) if length is None else length)}
    response = client.post(f"/v2/models/{name}/infer", content=header + blob, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"], response.json()
    assert client.get("/v2/health/ready").status_code == 200


def test_the_model_configuration_extension_serves_config_pbtxt_as_json(client, tiny_repository):
    for name in MODELS:
        on_disk = repository.read_config(tiny_repository / name)
        for path in (f"/v2/models/{name}/config", f"/v2/models/{name}/versions/1/config"):
            config = client.get(path).json()
            assert config["name"] == name and config["max_batch_size"] == on_disk.max_batch_size
            assert config["input"][0]["dims"] == list(on_disk.input[0].dims)  # numbers, as Triton writes them
            assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]
    assert client.get("/v2/models/nope/config").status_code == 404
    index = client.post("/v2/repository/index").json()
    assert sorted(entry["name"] for entry in index) == sorted(MODELS)
    assert {(entry["version"], entry["state"]) for entry in index} == {("1", "READY")}


def test_command_line_overrides_show_in_the_served_configuration(tiny_repository):
    from dlzoo.serve.sessions import Overrides

    settings = ServeSettings(
        tiny_repository, ("mlp_vector",), Overrides(max_batch_size=4, max_queue_delay_ms=3)
    )
    with TestClient(create_app(settings)) as client:
        config = client.get("/v2/models/mlp_vector/config").json()
        assert (
            config["max_batch_size"] == 4
            and config["dynamic_batching"]["max_queue_delay_microseconds"] == 3000
        )
        too_big = client.post(
            "/v2/models/mlp_vector/infer",
            json={"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [5, 2], "data": [0.0] * 10}]},
        )
        assert too_big.status_code == 400 and "maximum of 4" in too_big.json()["error"]


def test_a_request_past_its_timeout_gets_504_and_the_server_serves_on(client):
    body = {
        "inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}],
        "parameters": {"timeout": 1},  # microseconds, as tritonclient's `timeout=` sends it
    }
    response = client.post("/v2/models/mlp_vector/infer", json=body)
    assert response.status_code == 504 and "did not answer within 1e-06 s" in response.json()["error"]
    body["parameters"]["timeout"] = 0  # Triton's meaning: no limit of the request's own
    assert client.post("/v2/models/mlp_vector/infer", json=body).status_code == 200


def test_readiness_turns_false_when_a_batcher_has_died(tiny_repository):
    with TestClient(create_app(ServeSettings(tiny_repository, ("mlp_vector", "cnn_image")))) as client:
        assert client.get("/v2/health/ready").status_code == 200
        service = client.app.state.service
        for worker in service.batchers[("mlp_vector", "1")]._workers:
            client.portal.call(worker.cancel)
        client.portal.call(lambda: None)  # let the loop run the cancellation
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/mlp_vector/ready").status_code == 503
        assert client.get("/v2/models/cnn_image/ready").status_code == 200
        body = {"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}]}
        response = client.post("/v2/models/mlp_vector/infer", json=body)
        assert response.status_code == 503 and "stopped serving" in response.json()["error"]
        assert response.headers["retry-after"] == "1"


class _BrokenSession:
    def run(self, names, feeds):
        raise RuntimeError("secret detail from deep inside")


def test_an_internal_error_says_internal_error_and_logs_the_detail(tiny_repository, caplog):
    models = load_repository(tiny_repository, ["mlp_vector"])
    models["mlp_vector"] = dataclasses.replace(models["mlp_vector"], session=_BrokenSession())
    with TestClient(
        create_app(ServeSettings(tiny_repository), models), raise_server_exceptions=False
    ) as client:
        body = {"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}]}
        response = client.post("/v2/models/mlp_vector/infer", json=body)
        assert response.status_code == 500
        assert response.json() == {"error": "internal error; the server log has the details"}
        assert "secret detail" in caplog.text
        assert client.get("/v2/health/ready").status_code == 200
