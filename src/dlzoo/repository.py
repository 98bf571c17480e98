"""The exported model and the model repository, in Triton's layout.

The export stage converts a model once (it is slow and needs TensorFlow):

    models/onnx/<name>/model.onnx          the model
    models/onnx/<name>/metadata.json       ours: tensors, labels, preprocessing, SHA-256, parity
    models/onnx/<name>/vocabulary.json     text models: the tokenizer's vocabulary

The repository stage lays it out for serving with the serving settings (so changing them never
re-converts a model):

    models/repository/<name>/config.pbtxt      Triton's ModelConfig: tensors, batching, instances
    models/repository/<name>/labels.txt        classifiers with one score per class: Triton's labels
    models/repository/<name>/1/model.onnx      the same files as the export
    models/repository/<name>/1/metadata.json
    models/repository/<name>/1/vocabulary.json

`config.pbtxt` is written and read with Triton's own `ModelConfig` protobuf (as shipped in
tritonclient), so what Triton would refuse, we refuse too. The server reads only this directory,
never params.yaml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as triton

from dlzoo.config.experiments import ServingSettings
from dlzoo.errors import DlzooError
from dlzoo.records import METADATA_FILE, MODEL_FILE, ExportMetadata, TensorInfo
from dlzoo.store import atomic_directory

VERSION = "1"
CONFIG_FILE = "config.pbtxt"
VOCABULARY_FILE = "vocabulary.json"
LABELS_FILE = "labels.txt"  # Triton's label file, beside config.pbtxt
# Open Inference Protocol datatypes <-> Triton config types <-> numpy
TRITON_TYPES = {
    "FP32": triton.TYPE_FP32,
    "FP64": triton.TYPE_FP64,
    "INT32": triton.TYPE_INT32,
    "INT64": triton.TYPE_INT64,
}
DATATYPES = {value: key for key, value in TRITON_TYPES.items()}
NUMPY_TYPES = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64"}


class RepositoryError(DlzooError):
    """The model repository cannot be served as it is; the message says which file and why."""


def tensor(name: str, dtype: str, shape: list[int]) -> TensorInfo:
    """A tensor description; shape includes the batch dimension as -1."""
    return TensorInfo(name=name, datatype=NUMPY_TYPES[dtype], shape=[-1, *shape])


def is_labelled(metadata: ExportMetadata) -> bool:
    """One score per named class: Triton's classification extension can name the classes."""
    labels = metadata.labels
    return bool(labels) and [len(labels)] == metadata.outputs[0].shape[1:]


def model_config(metadata: ExportMetadata, settings: ServingSettings) -> triton.ModelConfig:
    """Triton's configuration of one model. With max_batch_size > 0, dims exclude the batch."""
    label_file = LABELS_FILE if is_labelled(metadata) else ""
    return triton.ModelConfig(
        name=metadata.name,
        backend="onnxruntime",
        max_batch_size=settings.max_batch_size,
        input=[
            triton.ModelInput(name=t.name, data_type=TRITON_TYPES[t.datatype], dims=t.shape[1:])
            for t in metadata.inputs
        ],
        output=[
            triton.ModelOutput(
                name=t.name,
                data_type=TRITON_TYPES[t.datatype],
                dims=t.shape[1:],
                label_filename=label_file,
            )
            for t in metadata.outputs
        ],
        version_policy=triton.ModelVersionPolicy(
            specific=triton.ModelVersionPolicy.Specific(versions=[int(VERSION)])
        ),
        dynamic_batching=triton.ModelDynamicBatching(
            max_queue_delay_microseconds=round(settings.max_queue_delay_ms * 1000),
            default_queue_policy=triton.ModelQueuePolicy(max_queue_size=settings.max_queue_size),
        ),
        instance_group=[
            triton.ModelInstanceGroup(kind=triton.ModelInstanceGroup.KIND_CPU, count=settings.instances)
        ],
    )


def write_export(out_dir: Path, onnx_bytes: bytes, metadata: ExportMetadata, files: dict[str, bytes]) -> None:
    """The export stage's output directory, written atomically."""
    with atomic_directory(out_dir) as staging:
        (staging / MODEL_FILE).write_bytes(onnx_bytes)
        for file_name, payload in files.items():
            (staging / file_name).write_bytes(payload)
        metadata.write(staging / METADATA_FILE)


def publish(export_dir: Path, out_dir: Path, settings: ServingSettings) -> triton.ModelConfig:
    """One repository entry from one export, written atomically; returns its configuration."""
    metadata = ExportMetadata.read(export_dir / METADATA_FILE)
    config = model_config(metadata, settings)
    with atomic_directory(out_dir) as staging:
        version_dir = staging / VERSION
        version_dir.mkdir()
        for source in sorted(export_dir.iterdir()):
            shutil.copyfile(source, version_dir / source.name)
        if is_labelled(metadata):
            labels = "".join(f"{label}\n" for label in metadata.labels)
            (staging / LABELS_FILE).write_text(labels, encoding="utf-8")
        (staging / CONFIG_FILE).write_text(text_format.MessageToString(config), encoding="utf-8")
    return config


def read_config(model_dir: Path) -> triton.ModelConfig:
    path = model_dir / CONFIG_FILE
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), triton.ModelConfig())
    except FileNotFoundError:
        raise RepositoryError(f"{path} is missing; rebuild the entry with `dvc repro`") from None
    except text_format.ParseError as error:
        raise RepositoryError(f"{path} is not a valid Triton ModelConfig: {error}") from None


def read_metadata(model_dir: Path) -> ExportMetadata:
    return ExportMetadata.read(model_dir / VERSION / METADATA_FILE)
