"""The serving contract, against a running server and the pipeline's real model repository.

Not part of the default run (marker `contract`). CI runs it after `make run`:

    dlzoo serve --repository models/repository --port 8000 --grpc-port 8001 &
    DLZOO_SERVER_URL=127.0.0.1:8000 DLZOO_GRPC_URL=127.0.0.1:8001 DLZOO_REPOSITORY=models/repository \
        pytest -m contract

For every model of the repository, Triton's own HTTP client must see it ready, get the tensors that
`metadata.json` declares and the model configuration, and Triton's HTTP and gRPC clients, called
at their defaults, must get back exactly what ONNX Runtime computes on the same `model.onnx`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton

from dlzoo import repository
from dlzoo.records import ExportMetadata

pytestmark = [pytest.mark.integration, pytest.mark.contract]

SERVER_ENV = "DLZOO_SERVER_URL"
GRPC_ENV = "DLZOO_GRPC_URL"
REPOSITORY_ENV = "DLZOO_REPOSITORY"
BATCH = 2


def _required(variable: str, example: str) -> str:
    value = os.environ.get(variable, "").strip()
    if not value:
        pytest.fail(
            f"{variable} is not set: the contract test needs a running `dlzoo serve` and its repository, "
            f"e.g. {variable}={example} (see this module's docstring)",
            pytrace=False,
        )
    return value


def _model_names() -> list[str]:
    """The models to parametrise over; a placeholder when there are none, so the fixtures say why."""
    root = Path(os.environ.get(REPOSITORY_ENV, "").strip() or "<unset>")
    names = sorted(path.parents[1].name for path in root.glob("*/1/metadata.json"))
    return names or ["<no model>"]


@pytest.fixture(scope="module")
def repository_root() -> Path:
    root = Path(_required(REPOSITORY_ENV, "models/repository"))
    if not any(root.glob("*/1/metadata.json")):
        pytest.fail(f"{REPOSITORY_ENV}={root} holds no model (no */1/metadata.json)", pytrace=False)
    return root


@pytest.fixture(scope="module")
def client() -> triton.InferenceServerClient:
    url = _required(SERVER_ENV, "127.0.0.1:8000")
    url = url.removeprefix("http://").rstrip("/")  # tritonclient wants host:port
    server = triton.InferenceServerClient(url=url, network_timeout=120.0)
    try:
        ready, problem = server.is_server_ready(), "it answers but is not ready"
    except Exception as error:  # connection refused, DNS, timeout: say where we looked
        ready, problem = False, f"no answer: {error}"
    if not ready:
        pytest.fail(f"the server at {SERVER_ENV}={url}: {problem}", pytrace=False)
    return server


@pytest.fixture(scope="module")
def grpc_client() -> triton_grpc.InferenceServerClient:
    url = _required(GRPC_ENV, "127.0.0.1:8001")
    server = triton_grpc.InferenceServerClient(url=url)
    try:
        ready = server.is_server_ready()
    except Exception as error:
        pytest.fail(f"the gRPC server at {GRPC_ENV}={url}: no answer: {error}", pytrace=False)
    if not ready:
        pytest.fail(f"the gRPC server at {GRPC_ENV}={url} answers but is not ready", pytrace=False)
    return server


def model_ready_batch(metadata: ExportMetadata, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A valid batch of BATCH samples in the model's own input tensor: (datatype, values)."""
    tensor = metadata.inputs[0]
    shape = [BATCH, *tensor.shape[1:]]
    if tensor.datatype == "INT32":  # token ids
        return "INT32", rng.integers(0, metadata.preprocessing.vocab_size, size=shape, dtype=np.int32)
    if metadata.preprocessing.type == "image":  # raw pixels, as float
        return tensor.datatype, rng.integers(0, 256, size=shape).astype(np.float32)
    return tensor.datatype, rng.normal(size=shape).astype(np.float32)


def onnxruntime_outputs(root: Path, name: str, input_name: str, values: np.ndarray) -> np.ndarray:
    model = root / name / repository.VERSION / repository.MODEL_FILE
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: values})[0]


@pytest.mark.parametrize("name", _model_names())
def test_model_is_ready_declares_its_tensors_and_matches_onnxruntime(
    repository_root, client, grpc_client, name
):
    assert client.is_model_ready(name), f"{name} is not ready"
    assert client.is_model_ready(name, model_version=repository.VERSION)
    expected = repository.read_metadata(repository_root / name)
    metadata = client.get_model_metadata(name)
    assert metadata["name"] == name
    assert metadata["inputs"] == [t.model_dump() for t in expected.inputs]
    assert metadata["outputs"] == [t.model_dump() for t in expected.outputs]

    datatype, values = model_ready_batch(expected, np.random.default_rng(2026))
    input_name, output_name = expected.inputs[0].name, expected.outputs[0].name
    reference = onnxruntime_outputs(repository_root, name, input_name, values)
    # Each client as its own examples call it: binary tensors over HTTP, raw contents over gRPC.
    for module, server in ((triton, client), (triton_grpc, grpc_client)):
        tensor = module.InferInput(input_name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        result = server.infer(name, [tensor], request_id=f"contract-{name}")
        served = result.as_numpy(output_name)
        assert served.shape == reference.shape == (BATCH, *expected.outputs[0].shape[1:])
        np.testing.assert_allclose(served, reference, rtol=1e-6, atol=1e-6)
    config = client.get_model_config(name)
    assert config["max_batch_size"] >= 1 and "dynamic_batching" in config
