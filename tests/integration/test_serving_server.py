"""`dlzoo serve` in a subprocess on free loopback ports, driven by Triton's own clients at their defaults.

tritonclient.http, tritonclient.http.aio, tritonclient.grpc and tritonclient.grpc.aio are called
the way their own examples call them (no binary_data= argument anywhere: HTTP then sends and asks
for binary tensors), and again with JSON asked for explicitly; every answer must equal ONNX Runtime
run directly on the same file.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
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


def start_server(repository_dir: Path, *options: str):
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "dlzoo.cli", "serve", "--repository", str(repository_dir)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_until_ready(process, port)
    return process, f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def server(tiny_repository: Path):
    process, rest, grpc_url = start_server(tiny_repository, "--max-queue-delay-ms", "1")
    try:
        yield {"rest": rest, "grpc": grpc_url}
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def http_client(server):
    return triton_http.InferenceServerClient(url=server["rest"])


@pytest.fixture(scope="module")
def grpc_client(server):
    return triton_grpc.InferenceServerClient(url=server["grpc"])


def reference(root: Path, name: str, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        root / name / "1" / "model.onnx", providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"inputs": batch})[0]


def model_batch(tiny_repository: Path, name: str, count: int = 3) -> tuple[str, np.ndarray]:
    metadata = repository.read_metadata(tiny_repository / name)
    datatype, _, values = valid_batch(metadata, count, np.random.default_rng(11))
    return datatype, values.astype(np.int32 if datatype == "INT32" else np.float32)


def http_infer(client, name: str, datatype: str, values: np.ndarray, json_only: bool = False, **options):
    """tritonclient.http as its examples write it; json_only asks for JSON both ways."""
    tensor = triton_http.InferInput("inputs", list(values.shape), datatype)
    if json_only:
        tensor.set_data_from_numpy(values, binary_data=False)
        outputs = [triton_http.InferRequestedOutput("outputs", binary_data=False)]
        return client.infer(name, [tensor], outputs=outputs, **options)
    tensor.set_data_from_numpy(values)
    return client.infer(name, [tensor], **options)


def grpc_infer(client, name: str, datatype: str, values: np.ndarray, **options):
    tensor = triton_grpc.InferInput("inputs", list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return client.infer(name, [tensor], **options)


def assert_matches(result, expected: np.ndarray) -> None:
    np.testing.assert_allclose(result.as_numpy("outputs"), expected, rtol=1e-6, atol=1e-7)


def test_both_clients_see_a_live_ready_server_with_its_extensions(http_client, grpc_client):
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    extensions = http_client.get_server_metadata()["extensions"]
    assert {"binary_tensor_data", "classification", "model_configuration"} <= set(extensions)
    assert list(grpc_client.get_server_metadata().extensions) == extensions
    index = http_client.get_model_repository_index()
    assert {entry["name"] for entry in index} == set(MODELS)
    assert {entry["state"] for entry in index} == {"READY"}
    assert {model.name for model in grpc_client.get_model_repository_index().models} == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_through_http_and_grpc_at_their_defaults_and_json(
    http_client, grpc_client, tiny_repository, name
):
    expected_metadata = repository.read_metadata(tiny_repository / name)
    assert http_client.is_model_ready(name) and grpc_client.is_model_ready(name, model_version="1")
    assert http_client.get_model_metadata(name)["inputs"] == [
        t.model_dump() for t in expected_metadata.inputs
    ]
    grpc_metadata = grpc_client.get_model_metadata(name)
    assert [list(t.shape) for t in grpc_metadata.outputs] == [t.shape for t in expected_metadata.outputs]
    datatype, values = model_batch(tiny_repository, name)
    expected = reference(tiny_repository, name, values)
    binary = http_infer(http_client, name, datatype, values, request_id="binary-1")
    assert binary.get_response()["id"] == "binary-1"
    assert binary.get_response()["outputs"][0]["parameters"]["binary_data_size"] == expected.nbytes
    assert_matches(binary, expected)
    assert_matches(http_infer(http_client, name, datatype, values, json_only=True), expected)
    result = grpc_infer(grpc_client, name, datatype, values, request_id="grpc-1")
    assert result.get_response().id == "grpc-1"
    assert_matches(result, expected)


def test_the_asyncio_clients_at_their_defaults_answer_every_model(server, tiny_repository):
    async def run() -> None:
        http_aio = triton_http_aio.InferenceServerClient(url=server["rest"])
        grpc_aio = triton_grpc_aio.InferenceServerClient(url=server["grpc"])
        try:
            assert await http_aio.is_server_ready() and await grpc_aio.is_server_ready()
            for name in MODELS:
                datatype, values = model_batch(tiny_repository, name, count=2)
                expected = reference(tiny_repository, name, values)
                http_input = triton_http_aio.InferInput("inputs", list(values.shape), datatype)
                http_input.set_data_from_numpy(values)
                grpc_input = triton_grpc_aio.InferInput("inputs", list(values.shape), datatype)
                grpc_input.set_data_from_numpy(values)
                answers = await asyncio.gather(
                    http_aio.infer(name, [http_input]), grpc_aio.infer(name, [grpc_input])
                )
                for answer in answers:
                    assert_matches(answer, expected)
        finally:
            await http_aio.close()
            await grpc_aio.close()

    asyncio.run(run())


def test_raw_text_uint8_images_and_classes_at_the_defaults(http_client, grpc_client):
    texts = np.array([[review.encode()] for review in REVIEWS], dtype=object)
    for client, module in ((http_client, triton_http), (grpc_client, triton_grpc)):
        tensor = module.InferInput("inputs", list(texts.shape), "BYTES")
        tensor.set_data_from_numpy(texts)
        top = module.InferRequestedOutput("outputs", class_count=1)
        classes = client.infer("transformer_text", [tensor], outputs=[top]).as_numpy("outputs")
        assert classes.shape == (len(REVIEWS), 1)
        assert all(entry.decode().split(":")[2] in ("negative", "positive") for entry in classes.ravel())

    pixels = np.random.default_rng(13).integers(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    as_float = http_infer(http_client, "cnn_image", "FP32", pixels.astype(np.float32)).as_numpy("outputs")
    np.testing.assert_array_equal(
        http_infer(http_client, "cnn_image", "UINT8", pixels).as_numpy("outputs"), as_float
    )
    np.testing.assert_array_equal(
        grpc_infer(grpc_client, "cnn_image", "UINT8", pixels).as_numpy("outputs"), as_float
    )


def test_model_configuration_through_both_clients(http_client, grpc_client, tiny_repository):
    for name in MODELS:
        on_disk = repository.read_config(tiny_repository / name)
        config = http_client.get_model_config(name)
        assert config["name"] == name and config["max_batch_size"] == on_disk.max_batch_size
        assert config["input"][0]["dims"] == list(on_disk.input[0].dims)
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1000  # --max-queue-delay-ms 1
        assert config["instance_group"][0]["kind"] == "KIND_CPU"
        assert grpc_client.get_model_config(name).config.max_batch_size == on_disk.max_batch_size


def test_client_mistakes_get_their_status_and_the_server_stays_ready(http_client, grpc_client):
    with pytest.raises(InferenceServerException, match="unknown model 'resnet'"):
        http_client.get_model_metadata("resnet")
    with pytest.raises(InferenceServerException, match="unknown model 'resnet'") as raised:
        grpc_client.get_model_metadata("resnet")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    assert not http_client.is_model_ready("resnet") and not grpc_client.is_model_ready("resnet")
    wrong = np.zeros((1, 3), dtype=np.float32)
    with pytest.raises(InferenceServerException, match=r"input shape \[1, 3\] does not match"):
        http_infer(http_client, "mlp_vector", "FP32", wrong)
    with pytest.raises(InferenceServerException, match=r"input shape \[1, 3\] does not match") as raised:
        grpc_infer(grpc_client, "mlp_vector", "FP32", wrong)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert http_client.is_server_ready() and grpc_client.is_server_ready()


# Raw gRPC messages a client library would never send: each gets INVALID_ARGUMENT with a reason.
def _message(change) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="mlp_vector")
    tensor = request.inputs.add(name="inputs", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.zeros(2, np.float32).tobytes())
    change(request, tensor)
    return request


BAD_GRPC = {
    "raw bytes too short": (lambda r, t: r.raw_input_contents.__setitem__(0, b"\0" * 7), "needs 8"),
    "more raw entries than inputs": (lambda r, t: r.raw_input_contents.append(b""), "2 entries for 1 inputs"),
    "negative dimension": (lambda r, t: t.shape.__setitem__(0, -1), "negative dimension"),
    "unknown datatype": (lambda r, t: setattr(t, "datatype", "FP128"), "unknown datatype"),
    "both raw and typed": (lambda r, t: t.contents.fp32_contents.extend([0, 0]), "both contents and raw"),
    "no data at all": (lambda r, t: r.ClearField("raw_input_contents"), "neither contents nor"),
    "typed contents of the wrong length": (
        lambda r, t: (r.ClearField("raw_input_contents"), t.contents.fp32_contents.extend([1.0])),
        r"needs 2",
    ),
    "timeout as a string": (lambda r, t: setattr(r.parameters["timeout"], "string_param", "x"), "integer"),
    "unknown output": (lambda r, t: r.outputs.add(name="logits"), "unknown output"),
    "a BYTES prefix past the end": (
        lambda r, t: (
            setattr(r, "model_name", "rnn_text"),
            setattr(t, "datatype", "BYTES"),
            t.shape.__setitem__(slice(None), [1]),
            r.raw_input_contents.__setitem__(0, b"\x10\x00\x00\x00abc"),
        ),
        "runs past the end",
    ),
}


@pytest.mark.parametrize("case", list(BAD_GRPC))
def test_malformed_grpc_messages_get_invalid_argument(server, case):
    change, message = BAD_GRPC[case]
    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(_message(change), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
        assert re.search(message, raised.value.details()), raised.value.details()
        assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready


def test_a_grpc_message_over_the_body_limit_gets_resource_exhausted(server):
    request = _message(lambda r, t: r.raw_input_contents.__setitem__(0, b"\0" * (9 * 1024 * 1024)))
    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready


def test_typed_grpc_contents_are_accepted_too(server, tiny_repository):
    values = np.random.default_rng(5).normal(size=(2, 2)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="mlp_vector")
    request.inputs.add(name="inputs", datatype="FP32", shape=[2, 2]).contents.fp32_contents.extend(
        values.ravel()
    )
    with grpc.insecure_channel(server["grpc"]) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    answer = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(
        list(response.outputs[0].shape)
    )
    np.testing.assert_allclose(answer, reference(tiny_repository, "mlp_vector", values), rtol=1e-6, atol=1e-7)


def post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_bad_bodies_over_real_http_leave_the_server_serving(server):
    port = int(server["rest"].rsplit(":", 1)[1])
    assert post(port, "/v2/models/mlp_vector/infer", b'{"inputs": [')[0] == 400
    body = b'{"inputs": [' + b" " * (9 * 1024 * 1024) + b"]}"
    status, answer = post(port, "/v2/models/mlp_vector/infer", body)
    assert status == 413 and "over the limit" in answer["error"]
    chunked = (chunk for chunk in [b"[" * 1000] * 10_000)  # 10 MB, no Content-Length
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v2/models/mlp_vector/infer", body=chunked, encode_chunked=True)
    assert connection.getresponse().status == 413
    assert post(port, "/v2/models/nope/infer", b"{}")[0] == 404
    header = json.dumps(
        {
            "inputs": [
                {"name": "inputs", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
            ]
        }
    ).encode()
    status, answer = post(
        port,
        "/v2/models/mlp_vector/infer",
        header + b"\0" * 4,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400 and "runs past the 4 bytes" in answer["error"]


def test_a_full_queue_answers_503_and_unavailable_at_once(tiny_repository):
    process, rest, grpc_url = start_server(
        tiny_repository, "--model", "transfer_image", "--max-queue-size", "1", "--max-queue-delay-ms", "200"
    )
    try:
        pixels = np.zeros((1, 32, 32, 3), np.float32)  # waits 200 ms for company: the queue is full
        http_client = triton_http.InferenceServerClient(url=rest, concurrency=8)
        pending = [http_client.async_infer("transfer_image", [_http_input(pixels)]) for _ in range(8)]
        outcomes = []
        for request in pending:
            try:
                request.get_result()
                outcomes.append("ok")
            except InferenceServerException as error:
                outcomes.append(error.status())
                assert "its limit; retry later" in error.message()
        assert "ok" in outcomes and "503" in outcomes
        grpc_client = triton_grpc.InferenceServerClient(url=grpc_url)
        codes = []
        with ThreadPoolExecutor(8) as pool:
            for future in [
                pool.submit(grpc_infer, grpc_client, "transfer_image", "FP32", pixels) for _ in range(8)
            ]:
                try:
                    future.result()
                    codes.append("ok")
                except InferenceServerException as error:
                    codes.append(error.status())
        assert "ok" in codes and "StatusCode.UNAVAILABLE" in codes
        assert http_client.is_server_ready()
    finally:
        process.terminate()
        process.wait(timeout=30)


def _http_input(values: np.ndarray) -> triton_http.InferInput:
    tensor = triton_http.InferInput("inputs", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return tensor


def test_load_of_16_clients_x_200_requests_over_grpc_and_binary_rest_has_no_errors(server, tiny_repository):
    texts = np.array([[REVIEWS[0].encode()]], dtype=object)

    def rest_session(_: int) -> int:
        client = triton_http.InferenceServerClient(url=server["rest"])
        for _ in range(200):
            http_infer(client, "rnn_text", "BYTES", texts)
        return 200

    def grpc_session(_: int) -> int:
        client = triton_grpc.InferenceServerClient(url=server["grpc"])
        for _ in range(200):
            grpc_infer(client, "rnn_text", "BYTES", texts)
        return 200

    for session in (rest_session, grpc_session):
        with ThreadPoolExecutor(16) as pool:
            assert sum(pool.map(session, range(16))) == 3200
    connection = http.client.HTTPConnection(*server["rest"].split(":"), timeout=5)
    connection.request("GET", "/metrics")
    metrics = connection.getresponse().read().decode()
    for protocol, code in (("rest", "200"), ("grpc", "OK")):
        line = f'dlzoo_inference_requests_total{{code="{code}",model="rnn_text",protocol="{protocol}"}}'
        (served,) = [row for row in metrics.splitlines() if row.startswith(line)]
        assert float(served.split()[-1]) >= 3200
    connection.request("GET", "/v2/health/ready")
    assert connection.getresponse().status == 200
