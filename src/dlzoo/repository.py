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
    models/repository/<name>/2/...             the graph-optimised variant, if it passed the gate
    models/repository/<name>/3/...             the INT8 variant, if it passed the gate

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

# The versions of a model in the repository, by variant; a kind is always the same number.
# Triton and `dlzoo serve` answer an unversioned request with the highest version served: the
# most optimised variant that passed the optimise stage's gate (INT8, else graph-optimised,
# else the FP32 export). Version 1 is always the FP32 export.
VERSIONS = {"fp32": "1", "optimised": "2", "int8": "3"}
VERSION = VERSIONS["fp32"]
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
    """Triton's configuration of one model, serving every version in its directory (the FP32
    export and the kept variants). With max_batch_size > 0, dims exclude the batch."""
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
        version_policy=triton.ModelVersionPolicy(all=triton.ModelVersionPolicy.All()),
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


def publish(
    export_dir: Path, variants_dir: Path | None, out_dir: Path, settings: ServingSettings
) -> triton.ModelConfig:
    """One repository entry from one export and its kept variants (the optimise stage's
    directory; None: the export alone), written atomically; returns its configuration."""
    metadata = ExportMetadata.read(export_dir / METADATA_FILE)
    config = model_config(metadata, settings)
    with atomic_directory(out_dir) as staging:
        _copy_files(export_dir, staging / VERSION)
        for kind, version in VERSIONS.items():
            variant_dir = variants_dir / kind if variants_dir is not None else None
            if variant_dir is not None and variant_dir.is_dir():
                _copy_files(export_dir, staging / version)  # the vocabulary, beside the model
                _copy_files(variant_dir, staging / version)
        if is_labelled(metadata):
            labels = "".join(f"{label}\n" for label in metadata.labels)
            (staging / LABELS_FILE).write_text(labels, encoding="utf-8")
        (staging / CONFIG_FILE).write_text(text_format.MessageToString(config), encoding="utf-8")
    return config


def _copy_files(source_dir: Path, target_dir: Path) -> None:
    target_dir.mkdir(exist_ok=True)
    for source in sorted(source_dir.iterdir()):
        shutil.copyfile(source, target_dir / source.name)


def versions(model_dir: Path) -> list[str]:
    """The versions of an entry with a metadata file, in Triton's order (numeric)."""
    found = [
        path.name for path in model_dir.iterdir() if path.name.isdigit() and (path / METADATA_FILE).is_file()
    ]
    return sorted(found, key=int)


def read_config(model_dir: Path) -> triton.ModelConfig:
    path = model_dir / CONFIG_FILE
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), triton.ModelConfig())
    except FileNotFoundError:
        raise RepositoryError(f"{path} is missing; rebuild the entry with `dvc repro`") from None
    except text_format.ParseError as error:
        raise RepositoryError(f"{path} is not a valid Triton ModelConfig: {error}") from None


def read_metadata(model_dir: Path, version: str = VERSION) -> ExportMetadata:
    return ExportMetadata.read(model_dir / version / METADATA_FILE)
