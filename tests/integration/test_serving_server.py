"""`dlzoo serve` in a subprocess on a free loopback port, driven by Triton's own HTTP client."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from dlzoo import repository
from tests.network import free_port
from tests.tiny_repository import MODELS, REVIEWS, valid_batch

pytestmark = pytest.mark.integration


def wait_until_ready(process: subprocess.Popen, port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dlzoo serve exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"dlzoo serve did not become ready in {timeout} s")


@pytest.fixture(scope="module")
def server(tiny_repository: Path):
    port = free_port()
    command = [sys.executable, "-m", "dlzoo.cli", "serve", "--repository", str(tiny_repository)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--max-queue-delay-ms", "1", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_ready(process, port)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server: str):
    return triton.InferenceServerClient(url=server)


def reference(root: Path, name: str, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        root / name / "1" / "model.onnx", providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"inputs": batch})[0]


def request_input(datatype: str, values: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("inputs", list(values.shape), datatype)
    tensor.set_data_from_numpy(values, binary_data=False)
    return tensor


def test_triton_client_sees_a_live_ready_server(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "dlzoo"


@pytest.mark.parametrize("name", list(MODELS))
def test_triton_client_metadata_and_inference_for_every_family(client, tiny_repository, name):
    assert client.is_model_ready(name) and client.is_model_ready(name, model_version="1")
    expected = repository.read_metadata(tiny_repository / name)
    metadata = client.get_model_metadata(name)
    assert metadata["inputs"] == expected["inputs"] and metadata["outputs"] == expected["outputs"]
    datatype, _, values = valid_batch(expected, 4, np.random.default_rng(11))
    values = values.astype(np.int32 if datatype == "INT32" else np.float32)
    result = client.infer(
        name,
        [request_input(datatype, values)],
        outputs=[triton.InferRequestedOutput("outputs", binary_data=False)],
        request_id="triton-1",
    )
    assert result.get_response()["id"] == "triton-1"
    np.testing.assert_allclose(
        result.as_numpy("outputs"), reference(tiny_repository, name, values), rtol=1e-6, atol=1e-7
    )


def test_triton_client_without_requested_outputs_gets_json_back(client, tiny_repository):
    values = np.random.default_rng(12).normal(size=(2, 2)).astype(np.float32)
    result = client.infer("mlp_vector", [request_input("FP32", values)])  # asks for binary outputs
    expected = reference(tiny_repository, "mlp_vector", values)
    np.testing.assert_allclose(result.as_numpy("outputs"), expected, rtol=1e-6, atol=1e-7)


def test_triton_client_sends_raw_text_uint8_images_and_asks_for_classes(client):
    texts = np.array([[review.encode()] for review in REVIEWS], dtype=object)
    top = triton.InferRequestedOutput("outputs", binary_data=False, class_count=1)
    result = client.infer("transformer_text", [request_input("BYTES", texts)], outputs=[top])
    classes = result.as_numpy("outputs")
    assert classes.shape == (len(REVIEWS), 1)
    assert all(entry.split(":")[2] in ("negative", "positive") for entry in classes.ravel())

    pixels = np.random.default_rng(13).integers(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    as_uint8 = client.infer("cnn_image", [request_input("UINT8", pixels)]).as_numpy("outputs")
    as_float = client.infer("cnn_image", [request_input("FP32", pixels.astype(np.float32))]).as_numpy(
        "outputs"
    )
    np.testing.assert_array_equal(as_uint8, as_float)


def test_triton_client_gets_the_servers_error_messages(client):
    with pytest.raises(InferenceServerException, match="unknown model 'resnet'"):
        client.get_model_metadata("resnet")
    assert not client.is_model_ready("resnet")
    wrong = np.zeros((1, 3), dtype=np.float32)
    with pytest.raises(InferenceServerException, match=r"input shape \[1, 3\] does not match"):
        client.infer("mlp_vector", [request_input("FP32", wrong)])
    binary = triton.InferInput("inputs", [1, 2], "FP32").set_data_from_numpy(np.zeros((1, 2), np.float32))
    with pytest.raises(InferenceServerException, match="binary_data=False"):
        client.infer("mlp_vector", [binary])
    assert client.is_server_ready()


def post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_bad_bodies_over_real_http_leave_the_server_serving(server: str):
    port = int(server.rsplit(":", 1)[1])
    assert post(port, "/v2/models/mlp_vector/infer", b'{"inputs": [')[0] == 400
    body = b'{"inputs": [' + b" " * (9 * 1024 * 1024) + b"]}"
    status, answer = post(port, "/v2/models/mlp_vector/infer", body)
    assert status == 413 and "over the limit" in answer["error"]
    chunked = (chunk for chunk in [b"[" * 1000] * 10_000)  # 10 MB, no Content-Length
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v2/models/mlp_vector/infer", body=chunked, encode_chunked=True)
    assert connection.getresponse().status == 413
    assert post(port, "/v2/models/nope/infer", b"{}")[0] == 404


def test_load_of_8_clients_x_200_requests_has_no_errors_and_the_server_stays_healthy(server: str):
    port = int(server.rsplit(":", 1)[1])
    body = json.dumps(
        {"inputs": [{"name": "inputs", "datatype": "BYTES", "shape": [1], "data": [REVIEWS[0]]}]}
    ).encode()

    def client_session(_: int) -> list[int]:
        connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=30
        )  # keep-alive, like a real client
        statuses = []
        for _ in range(200):
            connection.request("POST", "/v2/models/rnn_text/infer", body=body)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        statuses = [status for session in pool.map(client_session, range(8)) for status in session]
    assert len(statuses) == 1600 and set(statuses) == {200}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/metrics")
    metrics = connection.getresponse().read().decode()
    served = next(
        line for line in metrics.splitlines() if line.startswith('dlzoo_batch_size_sum{model="rnn_text"}')
    )
    assert float(served.split()[-1]) >= 1600
    connection.request("GET", "/v2/health/ready")
    assert connection.getresponse().status == 200
