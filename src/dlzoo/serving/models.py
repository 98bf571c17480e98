"""The served models: one ONNX Runtime session per repository entry, checked before it serves.

Everything a model needs (tensor names, shapes, labels, preprocessing, vocabulary) comes from its
repository entry, never from params.yaml, and TensorFlow is never imported here.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from dlzoo import repository
from dlzoo.data.store import load_json
from dlzoo.data.text import Vocabulary, pad
from dlzoo.errors import DlzooError

LOG = logging.getLogger("dlzoo.serving")
# Names as the URL carries them: no path characters, no leading dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NUMPY_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}
CLASSIFIER_KINDS = ("binary", "multiclass")


class RepositoryError(DlzooError):
    """The model repository cannot be served as it is; the message says which file and why."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for the batch dimension

    @classmethod
    def from_metadata(cls, entry: dict[str, Any]) -> TensorSpec:
        return cls(entry["name"], entry["datatype"], tuple(entry["shape"]))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    metadata: dict[str, Any]
    session: onnxruntime.InferenceSession
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    vocabulary: Vocabulary | None = None

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def labels(self) -> list[str] | None:
        return self.metadata.get("labels")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.metadata.get("preprocessing", {"type": "tensor"})

    @property
    def raw_datatype(self) -> str | None:
        """The friendly datatype the server also accepts: BYTES (review text) or UINT8 (pixels)."""
        return {"text": "BYTES", "image": "UINT8"}.get(self.preprocessing["type"])

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Raw reviews to padded token ids, exactly as preprocessing encoded the training data."""
        settings = self.preprocessing
        ids = [self.vocabulary.encode(text, settings["vocab_size"]) for text in texts]
        return pad(ids, settings["max_length"], settings["padding"], settings["truncating"])

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = [output.name for output in self.outputs]
        values = self.session.run(names, {self.input.name: batch})
        return dict(zip(names, values, strict=True))

    def describe(self) -> dict[str, Any]:
        """The Open Inference Protocol model metadata, plus our serving hints under `parameters`."""
        hints = {
            "task": self.metadata.get("task"),
            "kind": self.kind,
            "labels": self.labels,
            "max_batch_size": self.max_batch_size,
            "preprocessing": self.preprocessing,
        }
        if self.raw_datatype:
            raw_shape = [-1] if self.raw_datatype == "BYTES" else list(self.input.shape)
            hints["raw_input"] = {"name": self.input.name, "datatype": self.raw_datatype, "shape": raw_shape}
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [self.input.as_dict()],
            "outputs": [output.as_dict() for output in self.outputs],
            "parameters": hints,
        }


def load_repository(
    root: Path, names: list[str] | None = None, max_batch_size: int | None = None
) -> dict[str, ServedModel]:
    """Every entry of the repository (or the named ones), each verified and with a session."""
    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} does not exist; run `dvc repro` to export models")
    available = sorted(
        path.name
        for path in root.iterdir()
        if (path / repository.VERSION / repository.METADATA_FILE).is_file()
    )
    wanted = names or available
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise RepositoryError(f"no model {', '.join(missing)} in {root}; available: {', '.join(available)}")
    if not wanted:
        raise RepositoryError(f"{root} holds no models (no <name>/1/metadata.json); run `dvc repro`")
    return {name: load_model(root / name, max_batch_size) for name in wanted}


def load_model(model_dir: Path, max_batch_size: int | None = None) -> ServedModel:
    version_dir = model_dir / repository.VERSION
    metadata = load_json(version_dir / repository.METADATA_FILE)
    payload = (version_dir / repository.MODEL_FILE).read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != metadata["onnx_sha256"]:
        raise RepositoryError(
            f"{version_dir / repository.MODEL_FILE}: SHA-256 {digest} does not match its metadata "
            f"({metadata['onnx_sha256']}); the file was changed or half-written: re-export it with "
            f"`dvc repro export@{model_dir.name}`"
        )
    vocabulary = None
    if metadata.get("preprocessing", {}).get("type") == "text":
        vocabulary = Vocabulary.load(version_dir / metadata["preprocessing"]["vocabulary"])
    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    model = ServedModel(
        name=model_dir.name,
        version=metadata.get("version", repository.VERSION),
        metadata=metadata,
        session=session,
        input=TensorSpec.from_metadata(metadata["inputs"][0]),
        outputs=tuple(TensorSpec.from_metadata(entry) for entry in metadata["outputs"]),
        max_batch_size=max_batch_size or metadata["max_batch_size"],
        vocabulary=vocabulary,
    )
    LOG.info("loaded %s (%s, %d bytes, SHA-256 verified)", model.name, model.kind, len(payload))
    return model
