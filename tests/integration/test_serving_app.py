"""The serving app in process, through its lifespan: protocol, friendly inputs, every bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from fastapi.testclient import TestClient

from dlzoo import repository
from dlzoo.data.text import Vocabulary, pad
from dlzoo.serve.app import ServeSettings, create_app
from dlzoo.serve.sessions import RepositoryError, load_repository
from tests.tiny_repository import MAX_BATCH_SIZE, MODELS, REVIEWS, valid_batch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tiny_repository: Path):
    with TestClient(create_app(ServeSettings(tiny_repository, max_body_bytes=512 * 1024))) as client:
        yield client


def reference(root: Path, name: str, batch: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the repository's file, without the server."""
    session = onnxruntime.InferenceSession(
        root / name / "1" / "model.onnx", providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"inputs": batch})[0]


def infer(client: TestClient, name: str, inputs: list[dict], **extra):
    return client.post(f"/v2/models/{name}/infer", json={"inputs": inputs, **extra})


def tensor(datatype: str, shape: list, data) -> dict:
    return {"name": "inputs", "datatype": datatype, "shape": shape, "data": data}


def test_health_and_server_metadata(client: TestClient):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2").json()
    assert metadata["name"] == "dlzoo" and "classification" in metadata["extensions"]


@pytest.mark.parametrize("name", list(MODELS))
def test_model_metadata_describes_its_tensors_with_a_variable_batch(
    client: TestClient, name: str, tiny_repository
):
    expected = repository.read_metadata(tiny_repository / name)
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
        metadata = client.get(path).json()
        assert metadata["name"] == name and metadata["versions"] == ["1"]
        assert metadata["inputs"] == [t.model_dump() for t in expected.inputs]
        assert metadata["outputs"] == [t.model_dump() for t in expected.outputs]
        assert metadata["inputs"][0]["shape"][0] == -1
        parameters = metadata["parameters"]
        assert parameters["labels"] == expected.labels
        assert (parameters["task"], parameters["problem"]) == (expected.task, expected.problem)
        assert parameters["preprocessing"] == expected.preprocessing.to_json()
    assert client.get(f"/v2/models/{name}/ready").json()["ready"] is True
    assert client.get(f"/v2/models/{name}/versions/1/ready").status_code == 200


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_answers_like_onnx_runtime_with_flat_or_nested_data(client, tiny_repository, name):
    metadata = repository.read_metadata(tiny_repository / name)
    datatype, shape, values = valid_batch(metadata, 3, np.random.default_rng(0))
    expected = reference(tiny_repository, name, values)
    for data in (values.ravel().tolist(), values.tolist()):
        response = infer(client, name, [tensor(datatype, shape, data)], id="request-7")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "request-7" and body["model_name"] == name and body["model_version"] == "1"
        (output,) = body["outputs"]
        assert output["name"] == "outputs" and output["datatype"] == "FP32"
        assert output["shape"] == list(expected.shape)
        np.testing.assert_allclose(
            np.reshape(output["data"], output["shape"]), expected, rtol=1e-6, atol=1e-7
        )


@pytest.mark.parametrize("name", ["rnn_text", "transformer_text"])
def test_text_models_take_raw_reviews_as_bytes(client, tiny_repository, name):
    vocabulary = Vocabulary.load(tiny_repository / name / "1" / "vocabulary.json")
    settings = repository.read_metadata(tiny_repository / name).preprocessing
    encoded = [vocabulary.encode(text, settings.vocab_size) for text in REVIEWS]
    ids = pad(encoded, settings.max_length, settings.padding, settings.truncating)
    response = infer(client, name, [tensor("BYTES", [len(REVIEWS)], REVIEWS)])
    assert response.status_code == 200, response.text
    values = np.reshape(response.json()["outputs"][0]["data"], (len(REVIEWS), 1))
    np.testing.assert_allclose(values, reference(tiny_repository, name, ids), rtol=1e-6, atol=1e-7)
    nested = infer(client, name, [tensor("BYTES", [len(REVIEWS), 1], [[text] for text in REVIEWS])])
    assert nested.json()["outputs"] == response.json()["outputs"]


@pytest.mark.parametrize("name", ["cnn_image", "transfer_image", "autoencoder_digits"])
def test_image_models_take_uint8_pixels(client, tiny_repository, name):
    metadata = repository.read_metadata(tiny_repository / name)
    _, shape, values = valid_batch(metadata, 2, np.random.default_rng(1))
    as_uint8 = infer(client, name, [tensor("UINT8", shape, values.astype(np.uint8).tolist())])
    as_float = infer(client, name, [tensor("FP32", shape, values.tolist())])
    assert as_uint8.status_code == 200, as_uint8.text
    assert as_uint8.json()["outputs"] == as_float.json()["outputs"]


def test_classification_returns_labels_and_probabilities_best_first(client, tiny_repository):
    metadata = repository.read_metadata(tiny_repository / "cnn_image")
    _, shape, values = valid_batch(metadata, 2, np.random.default_rng(2))
    outputs = [{"name": "outputs", "parameters": {"classification": 2}}]
    body = infer(client, "cnn_image", [tensor("FP32", shape, values.tolist())], outputs=outputs).json()
    (output,) = body["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    probabilities = reference(tiny_repository, "cnn_image", values)
    for row, entries in zip(probabilities, np.reshape(output["data"], (2, 2)), strict=True):
        best = np.argsort(-row)[:2]
        assert [entry.split(":")[1:] for entry in entries] == [[str(i), CIFAR10[i]] for i in best]
        assert [float(entry.split(":")[0]) for entry in entries] == pytest.approx(row[best], abs=1e-6)


def test_binary_classification_reports_both_classes(client):
    outputs = [{"name": "outputs", "parameters": {"classification": 2}}]
    body = infer(client, "rnn_text", [tensor("BYTES", [1], [REVIEWS[0]])], outputs=outputs).json()
    entries = body["outputs"][0]["data"]
    assert {entry.split(":", 1)[1] for entry in entries} == {"0:negative", "1:positive"}
    assert sum(float(entry.split(":")[0]) for entry in entries) == pytest.approx(1.0, abs=1e-5)


IMAGE = [1, 32, 32, 3]
TOKENS = [1, 200]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BAD_INFER_REQUESTS = {
    "wrong shape": ("cnn_image", {"inputs": [tensor("FP32", [1, 32, 32], [0.0] * 1024)]}, "shape"),
    "wrong datatype": ("cnn_image", {"inputs": [tensor("INT64", IMAGE, [0] * 3072)]}, "datatype 'INT64'"),
    "text to an image model": (
        "cnn_image",
        {"inputs": [tensor("BYTES", [1], ["a cat"])]},
        "datatype 'BYTES'",
    ),
    "too few values": ("cnn_image", {"inputs": [tensor("FP32", IMAGE, [0.0] * 3071)]}, "3071 values"),
    "too many values": ("mlp_vector", {"inputs": [tensor("FP32", [1, 2], [[1.0, 2.0, 3.0]])]}, "needs 2"),
    "ragged data": ("mlp_vector", {"inputs": [tensor("FP32", [2, 2], [[1.0, 2.0], [3.0]])]}, "ragged"),
    "strings as numbers": ("mlp_vector", {"inputs": [tensor("FP32", [1, 2], ["1", "2"])]}, "only numbers"),
    "booleans as numbers": (
        "mlp_vector",
        {"inputs": [tensor("FP32", [1, 2], [True, False])]},
        "only numbers",
    ),
    "nulls": ("mlp_vector", {"inputs": [tensor("FP32", [1, 2], [None, 1.0])]}, "only numbers"),
    "NaN": (
        "mlp_vector",
        '{"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2], "data": [NaN, 1]}]}',
        "NaN",
    ),
    "Infinity": (
        "mlp_vector",
        '{"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2], "data": [Infinity, 1]}]}',
        "Infinity",
    ),
    "overflow to infinity": (
        "mlp_vector",
        '{"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2], "data": [1e400, 1]}]}',
        "NaN or infinite",
    ),
    "FP32 out of range": ("mlp_vector", {"inputs": [tensor("FP32", [1, 2], [1e300, 1.0])]}, "out of range"),
    "token id over the vocabulary": (
        "rnn_text",
        {"inputs": [tensor("INT32", TOKENS, [10000] * 200)]},
        r"\[0, 10000\)",
    ),
    "negative token id": ("rnn_text", {"inputs": [tensor("INT32", TOKENS, [-1] * 200)]}, r"\[0, 10000\)"),
    "fractional token id": ("rnn_text", {"inputs": [tensor("INT32", TOKENS, [1.5] * 200)]}, "whole numbers"),
    "pixel over 255": ("cnn_image", {"inputs": [tensor("UINT8", IMAGE, [256] * 3072)]}, "0 to 255"),
    "texts not strings": ("rnn_text", {"inputs": [tensor("BYTES", [2], ["good", 3])]}, "review texts"),
    "text count not matching": ("rnn_text", {"inputs": [tensor("BYTES", [2], ["good"])]}, "1 texts"),
    "batch over the maximum": (
        "mlp_vector",
        {"inputs": [tensor("FP32", [MAX_BATCH_SIZE + 1, 2], [0.0] * 2 * (MAX_BATCH_SIZE + 1))]},
        "over the maximum of 16",
    ),
    "empty batch": ("mlp_vector", {"inputs": [tensor("FP32", [0, 2], [])]}, "at least one sample"),
    "negative dimension": ("mlp_vector", {"inputs": [tensor("FP32", [-1, 2], [0.0, 0.0])]}, "non-negative"),
    "unknown input name": (
        "mlp_vector",
        {"inputs": [{**tensor("FP32", [1, 2], [0, 0]), "name": "x"}]},
        "unknown input",
    ),
    "two inputs": ("mlp_vector", {"inputs": [tensor("FP32", [1, 2], [0, 0])] * 2}, "has one input"),
    "no inputs": ("mlp_vector", {"outputs": []}, "non-empty list"),
    "a 5,000-digit integer": (
        "mlp_vector",
        '{"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2], "data": [1'
        + "0" * 5000
        + ", 1]}]}",
        "JSON parsing refuses",
    ),
    "unknown datatype": ("mlp_vector", {"inputs": [tensor("FP128", [1, 2], [0, 0])]}, "unknown datatype"),
    "no data": (
        "mlp_vector",
        {"inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2]}]},
        "neither",
    ),
    "binary size without the header": (
        "mlp_vector",
        {
            "inputs": [
                {"name": "inputs", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
            ]
        },
        "no Inference-Header-Content-Length",
    ),
    "timeout not an integer": (
        "mlp_vector",
        {"inputs": [tensor("FP32", [1, 2], [0, 0])], "parameters": {"timeout": "soon"}},
        "microseconds",
    ),
    "a list body": ("mlp_vector", [1, 2], "JSON object"),
    "id not a string": ("mlp_vector", {"id": 5, "inputs": [tensor("FP32", [1, 2], [0, 0])]}, "`id`"),
    "unknown output": (
        "mlp_vector",
        {"inputs": [tensor("FP32", [1, 2], [0, 0])], "outputs": [{"name": "logits"}]},
        "unknown output 'logits'",
    ),
    "classification of a regression": (
        "rnn_sequence",
        {
            "inputs": [tensor("FP32", [1, 10, 1], [0.0] * 10)],
            "outputs": [{"name": "outputs", "parameters": {"classification": 1}}],
        },
        "regression model",
    ),
    "malformed JSON": ("mlp_vector", '{"inputs": [', "not valid JSON"),
    "not UTF-8": ("mlp_vector", b"\xff\xfe{}", "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_INFER_REQUESTS))
def test_every_bad_request_gets_a_400_that_says_what_was_wrong(client: TestClient, case: str):
    name, body, message = BAD_INFER_REQUESTS[case]
    if isinstance(body, str | bytes):
        response = client.post(
            f"/v2/models/{name}/infer", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert re.search(message, response.json()["error"]), response.json()
    assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("get", "/v2/models/resnet", 404, "unknown model 'resnet'; available: autoencoder_digits"),
        ("get", "/v2/models/cnn_image/versions/2", 404, "no version '2'"),
        ("get", "/v2/models/cnn_image/versions/2/ready", 404, "no version '2'"),
        ("post", "/v2/models/cnn_image/versions/7/infer", 404, "no version '7'"),
        ("post", "/v2/models/resnet/infer", 404, "unknown model"),
        ("get", "/v2/models/..%5Cetc", 400, "may hold only letters"),
        ("get", "/v2/models/.hidden", 400, "may hold only letters"),
        ("get", "/v2/models/%2E%2E/ready", 400, "may hold only letters"),
        ("get", "/v2/models/a%2Fb", 404, "no such endpoint"),
        ("get", "/v2/models/cnn_image/infer", 405, "Method Not Allowed"),
        ("get", "/v3/health", 404, "no such endpoint"),
    ],
)
def test_unknown_models_versions_and_path_characters_get_a_4xx(client, method, path, status, message):
    response = getattr(client, method)(path)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_body_over_the_limit_gets_413_declared_or_streamed(client: TestClient):
    big = json.dumps({"inputs": [tensor("FP32", [1, 2], [0.0] * 200_000)]}).encode()
    response = client.post("/v2/models/mlp_vector/infer", content=big)
    assert response.status_code == 413 and "over the limit of 524,288 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the server counts while it reads
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    response = client.post("/v2/models/mlp_vector/infer", content=chunks())
    assert response.status_code == 413
    assert client.get("/v2/health/live").status_code == 200


def test_metrics_count_requests_by_model_and_status(client: TestClient):
    infer(client, "mlp_vector", [tensor("FP32", [1, 2], [0.5, 0.5])])
    infer(client, "mlp_vector", [tensor("FP32", [1, 3], [0.5, 0.5, 0.5])])
    text = client.get("/metrics").text
    assert 'dlzoo_inference_requests_total{code="200",model="mlp_vector",protocol="rest"}' in text
    assert 'dlzoo_inference_requests_total{code="400",model="mlp_vector",protocol="rest"}' in text
    assert (
        'dlzoo_inference_request_duration_seconds_bucket{le="0.005",model="mlp_vector",protocol="rest"}'
        in text
    )
    assert 'dlzoo_batch_size_count{model="mlp_vector"}' in text


def test_a_changed_model_file_is_refused_at_startup(tiny_repository: Path, tmp_path: Path):
    shutil.copytree(tiny_repository / "mlp_vector", tmp_path / "mlp_vector")
    model_file = tmp_path / "mlp_vector" / "1" / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:-10])
    with pytest.raises(
        RepositoryError, match=r"SHA-256 .* does not match its metadata .*dvc repro repository@mlp_vector"
    ):
        load_repository(tmp_path)
    with pytest.raises(RepositoryError, match="SHA-256"), TestClient(create_app(ServeSettings(tmp_path))):
        pass


def test_a_missing_repository_or_model_is_a_clear_error(tiny_repository: Path, tmp_path: Path):
    with pytest.raises(RepositoryError, match="does not exist; run `dvc repro`"):
        load_repository(tmp_path / "nowhere")
    with pytest.raises(RepositoryError, match="holds no models"):
        load_repository(tmp_path)
    with pytest.raises(RepositoryError, match=r"no model resnet in .*; available: autoencoder_digits"):
        load_repository(tiny_repository, ["resnet"])
    assert list(load_repository(tiny_repository, ["mlp_vector"])) == ["mlp_vector"]
