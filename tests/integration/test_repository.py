"""The model repository the export and repository stages write, judged by Triton's own protobuf."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from dlzoo import repository
from dlzoo.serve.sessions import load_repository
from tests.tiny_repository import MODELS, SERVING

pytestmark = pytest.mark.integration
ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT32: "TYPE_INT32"}


def parsed(entry: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def onnx_tensors(values) -> list[tuple[str, str, list]]:
    """(name, Triton type, dims without the batch) of graph inputs or outputs; the batch is dynamic."""
    described = []
    for value in values:
        shape = value.type.tensor_type.shape.dim
        assert not shape[0].HasField("dim_value")  # a dynamic batch dimension (unnamed or symbolic)
        dims = [dim.dim_value for dim in shape[1:]]
        described.append((value.name, ONNX_TYPES[value.type.tensor_type.elem_type], dims))
    return described


@pytest.mark.parametrize("name", list(MODELS))
def test_every_config_parses_as_triton_model_config_and_agrees_with_the_onnx_file(tiny_repository, name):
    entry = tiny_repository / name
    config = parsed(entry)
    graph = onnx.load(entry / "1" / "model.onnx").graph
    config_type = model_config_pb2.DataType.Name
    assert config.name == name and config.backend == "onnxruntime"
    assert [(t.name, config_type(t.data_type), list(t.dims)) for t in config.input] == onnx_tensors(
        graph.input
    )
    assert [(t.name, config_type(t.data_type), list(t.dims)) for t in config.output] == onnx_tensors(
        graph.output
    )
    assert config.max_batch_size == SERVING.max_batch_size
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == round(SERVING.max_queue_delay_ms * 1000)
    assert config.dynamic_batching.default_queue_policy.max_queue_size == SERVING.max_queue_size
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == SERVING.instances
    assert config.version_policy.WhichOneof("policy_choice") == "all"  # version 1 and the kept variants
    metadata = repository.read_metadata(entry)
    if repository.is_labelled(metadata):
        assert config.output[0].label_filename == "labels.txt"
        assert (entry / "labels.txt").read_text().split("\n")[:-1] == metadata.labels


def test_serving_settings_change_only_the_config_never_the_exported_files(tiny_repository, tmp_path):
    export_dir = tiny_repository.parent / "onnx" / "cnn_image"
    changed = dataclasses.replace(SERVING, max_batch_size=4, max_queue_delay_ms=2.5, instances=2)
    config = repository.publish(export_dir, None, tmp_path / "cnn_image", changed)
    assert config.max_batch_size == 4 and config.dynamic_batching.max_queue_delay_microseconds == 2500
    assert parsed(tmp_path / "cnn_image") == config
    for source in export_dir.iterdir():
        assert (tmp_path / "cnn_image" / "1" / source.name).read_bytes() == source.read_bytes()
    served = load_repository(tmp_path)["cnn_image"]
    assert (served.max_batch_size, served.max_queue_delay_s, served.instances) == (4, 0.0025, 2)


def test_entries_being_written_or_hidden_are_never_served(tiny_repository, tmp_path):
    shutil.copytree(tiny_repository / "mlp_vector", tmp_path / "mlp_vector")
    shutil.copytree(tiny_repository / "mlp_vector", tmp_path / ".mlp_vector.tmp-k2j4")  # a staging copy
    shutil.copytree(tiny_repository / "mlp_vector", tmp_path / ".hidden")
    assert list(load_repository(tmp_path)) == ["mlp_vector"]


def test_a_config_triton_would_refuse_is_refused_at_load(tiny_repository, tmp_path):
    shutil.copytree(tiny_repository / "mlp_vector", tmp_path / "mlp_vector")
    (tmp_path / "mlp_vector" / "config.pbtxt").write_text('name: "mlp_vector"\nmax_batch: 4\n')
    with pytest.raises(repository.RepositoryError, match=r"config.pbtxt is not a valid Triton ModelConfig"):
        load_repository(tmp_path)
