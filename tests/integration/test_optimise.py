"""The optimise stage on tiny models of every family, and the versions it adds to the repository.

The exports are the tiny repository's (made by the export stage's own code); the variants are
made by `dlzoo.optimise.stage` and laid out by the repository stage's `publish`, then served by
a real `dlzoo serve` process and called with Triton's own clients at their defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from dlzoo import models, repository
from dlzoo.config import load_params
from dlzoo.config.experiments import ScratchMlpConfig
from dlzoo.data.splits import load_info
from dlzoo.export.stage import export_model
from dlzoo.optimise import stage
from dlzoo.records import METADATA_FILE, MODEL_FILE, VARIANTS_FILE, ExportMetadata, Variants
from tests.integration.test_serving_server import start_server
from tests.tiny_repository import EXPORT, MODELS, SERVING, built, saved, valid_batch

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
SETTINGS = load_params(PROJECT / "params.yaml").optimise
SERVED = ("mlp_vector", "cnn_image", "transformer_text")  # dynamic, static QDQ, transformer fusion
# The tiny models are untrained: INT8 can flip the argmax of their near-uniform outputs. The gate
# has its own tests below; here every variant passes, so that each is checked and served.
LENIENT = dataclasses.replace(SETTINGS, max_accuracy_drop=1.0, max_loss_increase=1e6)


def optimised(tiny_repository: Path, demo_data: Path, name: str, settings=SETTINGS) -> stage.Optimised:
    family, data, _ = MODELS[name]
    export_dir = tiny_repository.parent / "onnx" / name
    return stage.optimise(export_dir, demo_data / "processed" / data, family, settings)


@pytest.fixture(scope="module")
def variants(tiny_repository: Path, demo_data: Path, tmp_path_factory) -> Path:
    """The optimise stage's directory for every tiny model."""
    root = tmp_path_factory.mktemp("variants")
    for name in MODELS:
        stage.write(root / name, optimised(tiny_repository, demo_data, name, LENIENT))
    return root


@pytest.mark.parametrize("name", list(MODELS))
def test_every_family_gets_variants_that_are_valid_onnx_onnx_runtime_loads(variants: Path, name: str):
    record = Variants.read(variants / name / VARIANTS_FILE)
    assert [decision.kind for decision in record.variants] == ["optimised", "int8"]
    assert record.onnxruntime_version == onnxruntime.__version__
    for decision in record.variants:
        assert decision.version == repository.VERSIONS[decision.kind]
        if not decision.kept:
            assert not (variants / name / decision.kind).exists(), decision.reason
            continue
        path = variants / name / decision.kind / MODEL_FILE
        onnx.checker.check_model(onnx.load(path))
        onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        metadata = ExportMetadata.read(variants / name / decision.kind / METADATA_FILE)
        assert (metadata.variant, metadata.version) == (decision.kind, decision.version)
        assert metadata.onnx_sha256 == decision.onnx_sha256 and metadata.parity is None
    int8 = record.variants[1]
    assert int8.kept, int8.reason  # every tiny model has weights its family's rule quantises
    assert set(int8.operators) & stage.QUANTISED_OPERATORS
    if MODELS[name][0] == "transformer":
        assert record.fusions is not None  # the transformer optimiser ran (and found what it found)


def test_the_convolutional_models_are_quantised_statically_with_qdq(variants: Path):
    for name in ("cnn_image", "transfer_image"):
        int8 = Variants.read(variants / name / VARIANTS_FILE).variants[1]
        assert int8.method.startswith("static INT8 (QDQ)") and "QuantizeLinear" in int8.operators


def fragile_export(demo_data: Path, out: Path) -> Path:
    """A NumPy MLP on moons (a logistic regression in its first hidden unit, about 0.86 accurate)
    whose first layer also holds one weight of 1000 that nothing downstream uses: per-tensor INT8
    rounds every real weight of that layer to zero, so its INT8 variant cannot classify."""
    family = models.family("scratch_mlp")
    data_dir = demo_data / "processed" / "moons"
    info = load_info(data_dir)
    model = built(family, ScratchMlpConfig((2,), "tanh"), info)
    model.weights = [np.array([[0.118, 1000.0], [-0.466, 0.0]]), np.array([[10.0], [0.0]])]
    model.biases = [np.array([0.06, 0.0]), np.array([0.0])]
    exported = export_model(saved("fragile", family, model, info, out / "model"), data_dir, EXPORT)
    repository.write_export(out / "onnx", exported.onnx_bytes, exported.metadata, exported.files)
    return out / "onnx"


def test_the_gate_keeps_a_variant_within_tolerance_and_rejects_one_outside_it(
    demo_data: Path, tmp_path: Path
):
    export_dir = fragile_export(demo_data, tmp_path)
    data_dir = demo_data / "processed" / "moons"
    strict = dataclasses.replace(SETTINGS, max_accuracy_drop=0.0)  # not one validation sample may flip
    result = stage.optimise(export_dir, data_dir, "scratch_mlp", strict)
    optimised_variant, int8 = result.record.variants
    assert optimised_variant.kept and optimised_variant.gate.change == 0.0, optimised_variant.reason
    assert int8.gate.fp32 > 0.8 and int8.gate.value < 0.6
    assert (
        not int8.kept and int8.reason.startswith("rejected: accuracy") and "max_accuracy_drop" in int8.reason
    )
    assert int8.onnx_sha256 is None and set(result.files) == {"optimised"}
    stage.write(tmp_path / "variants", result)
    assert not (tmp_path / "variants" / "int8").exists()
    entry = tmp_path / "repository" / "fragile"
    repository.publish(export_dir, tmp_path / "variants", entry, SERVING)
    assert repository.versions(entry) == ["1", "2"]  # the rejected INT8 variant is not served


def test_the_gate_rule_on_accuracy_counts_and_relative_loss():
    settings = dataclasses.replace(SETTINGS, max_accuracy_drop=0.005, max_loss_increase=0.01)
    assert stage.gate("binary", 0.900, 0.895, 200, settings).passed  # exactly 1 of 200 lower
    assert not stage.gate("binary", 0.900, 0.890, 200, settings).passed
    assert stage.gate("multiclass", 0.5, 0.6, 10, settings).passed  # better always passes
    assert stage.gate("regression", 2.0, 2.02, 50, settings).passed
    assert not stage.gate("reconstruction", 2.0, 2.03, 50, settings).passed
    zero = dataclasses.replace(settings, max_accuracy_drop=0.0)
    assert not stage.gate("binary", 0.900, 0.895, 200, zero).passed


@pytest.fixture(scope="module")
def versioned_repository(tiny_repository: Path, variants: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("versioned")
    for name in SERVED:
        repository.publish(tiny_repository.parent / "onnx" / name, variants / name, root / name, SERVING)
    return root


@pytest.fixture(scope="module")
def server(versioned_repository: Path):
    process, rest, grpc_url = start_server(versioned_repository)
    yield rest, grpc_url
    process.terminate()
    process.wait(timeout=30)


def direct(entry: Path, version: str, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(entry / version / MODEL_FILE, providers=["CPUExecutionProvider"])
    return session.run(None, {"inputs": batch})[0]


@pytest.mark.parametrize("name", SERVED)
def test_every_version_is_served_and_answers_like_onnx_runtime_on_its_file(
    server, versioned_repository: Path, name: str
):
    rest, grpc_url = server
    entry = versioned_repository / name
    versions = repository.versions(entry)
    assert versions == ["1", "2", "3"]
    metadata = repository.read_metadata(entry)
    datatype, shape, batch = valid_batch(metadata, 4, np.random.default_rng(3))
    http_client = triton_http.InferenceServerClient(url=rest)
    grpc_client = triton_grpc.InferenceServerClient(url=grpc_url)
    assert http_client.get_model_metadata(name)["versions"] == versions
    for version in versions:
        expected = direct(entry, version, batch)
        variant = http_client.get_model_metadata(name, model_version=version)["parameters"]["variant"]
        assert variant == ExportMetadata.read(entry / version / METADATA_FILE).variant
        for module, client in ((triton_http, http_client), (triton_grpc, grpc_client)):
            inputs = [module.InferInput("inputs", shape, datatype)]
            inputs[0].set_data_from_numpy(batch)
            result = client.infer(name, inputs, model_version=version)
            np.testing.assert_allclose(result.as_numpy("outputs"), expected, rtol=1e-5, atol=1e-6)
            response = result.get_response()
            answered = response["model_version"] if module is triton_http else response.model_version
            assert answered == version
    inputs = [triton_http.InferInput("inputs", shape, datatype)]
    inputs[0].set_data_from_numpy(batch)
    unversioned = http_client.infer(name, inputs)
    assert unversioned.get_response()["model_version"] == versions[-1]  # the highest, as in Triton
    np.testing.assert_allclose(
        unversioned.as_numpy("outputs"), direct(entry, versions[-1], batch), rtol=1e-5, atol=1e-6
    )
