"""The model repository, in Triton's layout, with the metadata a server needs beside each model.

    models/repository/<name>/config.pbtxt      Triton's model configuration (onnxruntime backend)
    models/repository/<name>/labels.txt        classifiers with one score per class: Triton's labels
    models/repository/<name>/1/model.onnx      the model
    models/repository/<name>/1/metadata.json   ours: tensors, labels, preprocessing, SHA-256, run id
    models/repository/<name>/1/vocabulary.json text models: the tokenizer's vocabulary

The server reads only this directory, never params.yaml: every model carries its own config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlzoo.data.store import load_json, save_json

VERSION = "1"
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.pbtxt"
VOCABULARY_FILE = "vocabulary.json"
LABELS_FILE = "labels.txt"  # Triton's label file, beside config.pbtxt
# Open Inference Protocol datatypes <-> Triton config types <-> numpy
TRITON_TYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64"}
NUMPY_TYPES = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64"}


def tensor(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    """A tensor description; shape includes the batch dimension as -1."""
    return {"name": name, "datatype": NUMPY_TYPES[dtype], "shape": [-1, *shape]}


def config_pbtxt(
    name: str, inputs: list[dict], outputs: list[dict], max_batch_size: int, labelled: bool = False
) -> str:
    """Triton's text config. With max_batch_size > 0, dims exclude the batch dimension.

    `labelled`: the (single) output has one score per class and `labels.txt` names them, so
    Triton's classification extension answers with labels too.
    """

    def block(kind: str, tensors: list[dict]) -> str:
        label = f'\n    label_filename: "{LABELS_FILE}"' if labelled and kind == "output" else ""
        entries = [
            f'  {{\n    name: "{t["name"]}"\n    data_type: {TRITON_TYPES[t["datatype"]]}\n'
            f"    dims: [ {', '.join(str(d) for d in t['shape'][1:])} ]{label}\n  }}"
            for t in tensors
        ]
        return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"

    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch_size}\n'
        + block("input", inputs)
        + block("output", outputs)
        + f"version_policy: {{ specific: {{ versions: [ {VERSION} ] }} }}\n"
    )


def write_entry(
    root: Path, name: str, onnx_bytes: bytes, metadata: dict[str, Any], extra: dict[str, bytes]
) -> None:
    """Writes one model's directory under `root` (the caller makes the write atomic)."""
    version_dir = root / VERSION
    version_dir.mkdir(parents=True)
    (version_dir / MODEL_FILE).write_bytes(onnx_bytes)
    for file_name, payload in extra.items():
        (version_dir / file_name).write_bytes(payload)
    save_json(version_dir / METADATA_FILE, metadata)
    labels = metadata.get("labels")
    labelled = bool(labels) and [len(labels)] == metadata["outputs"][0]["shape"][1:]
    if labelled:
        (root / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    config = config_pbtxt(name, metadata["inputs"], metadata["outputs"], metadata["max_batch_size"], labelled)
    (root / CONFIG_FILE).write_text(config, encoding="utf-8")


def read_metadata(model_dir: Path) -> dict[str, Any]:
    return load_json(model_dir / VERSION / METADATA_FILE)
