"""The served models: one ONNX Runtime session per repository entry, checked before it serves.

Everything a model needs (tensor names, shapes, labels, preprocessing, vocabulary, batching)
comes from its repository entry (metadata.json and Triton's config.pbtxt), never from
params.yaml, and TensorFlow is never imported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from tritonclient.grpc import model_config_pb2 as triton

from dlzoo import repository
from dlzoo.data.text import Vocabulary, pad
from dlzoo.records import ExportMetadata, Preprocessing, TensorInfo
from dlzoo.repository import RepositoryError
from dlzoo.serve.tensors import NUMPY_DTYPES

LOG = logging.getLogger("dlzoo.serve")
# Names as the URL carries them: no path characters, no leading dot (so `.name.tmp-*` staging
# directories that a running export is writing are never served).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A run this short blocks the event loop less than a hop to a worker thread costs (see batching).
INLINE_RUN_SECONDS = 0.0005
DEFAULT_MAX_QUEUE_SIZE = 1024  # when a config.pbtxt sets no queue limit (Triton's 0: unbounded)

__all__ = ["Overrides", "RepositoryError", "ServedModel", "load_model", "load_repository"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for the batch dimension

    @classmethod
    def from_metadata(cls, entry: TensorInfo) -> TensorSpec:
        return cls(entry.name, entry.datatype, tuple(entry.shape))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over config.pbtxt; None keeps the repository's."""

    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    max_queue_size: int | None = None
    dynamic_batching: bool = True
    intra_op_threads: int = 1

    def apply(self, config: triton.ModelConfig) -> triton.ModelConfig:
        served = triton.ModelConfig()
        served.CopyFrom(config)
        if self.max_batch_size is not None:
            served.max_batch_size = self.max_batch_size
        if not self.dynamic_batching:
            served.ClearField("dynamic_batching")
            return served
        batching = served.dynamic_batching  # created when the repository had none
        if self.max_queue_delay_ms is not None:
            batching.max_queue_delay_microseconds = round(self.max_queue_delay_ms * 1000)
        if self.max_queue_size is not None:
            batching.default_queue_policy.max_queue_size = self.max_queue_size
        return served


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    metadata: ExportMetadata
    config: triton.ModelConfig  # what is served: config.pbtxt with the command line's overrides
    session: onnxruntime.InferenceSession
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    vocabulary: Vocabulary | None = None
    inline_rows: int = 0  # batches up to this size run on the event loop (see warm_up)
    versions: tuple[str, ...] = ()  # every version of this entry served (with this one)
    others: tuple[ServedModel, ...] = ()  # on the default (highest) version: the lower ones

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size

    @property
    def dynamic_batching(self) -> bool:
        return self.config.HasField("dynamic_batching")

    @property
    def max_queue_delay_s(self) -> float:
        return self.config.dynamic_batching.max_queue_delay_microseconds / 1e6

    @property
    def max_queue_size(self) -> int:
        return self.config.dynamic_batching.default_queue_policy.max_queue_size or DEFAULT_MAX_QUEUE_SIZE

    @property
    def instances(self) -> int:
        return sum(group.count or 1 for group in self.config.instance_group) or 1

    @property
    def problem(self) -> str:
        return self.metadata.problem

    @property
    def labels(self) -> list[str] | None:
        return self.metadata.labels

    @property
    def preprocessing(self) -> Preprocessing:
        return self.metadata.preprocessing

    @property
    def raw_datatype(self) -> str | None:
        """The friendly datatype the server also accepts: BYTES (review text) or UINT8 (pixels)."""
        return {"text": "BYTES", "image": "UINT8"}.get(self.preprocessing.type)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Raw reviews to padded token ids, exactly as preprocessing encoded the training data."""
        settings = self.preprocessing
        ids = [self.vocabulary.encode(text, settings.vocab_size) for text in texts]
        return pad(ids, settings.max_length, settings.padding, settings.truncating)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = [output.name for output in self.outputs]
        values = self.session.run(names, {self.input.name: batch})
        return dict(zip(names, values, strict=True))

    def describe(self) -> dict[str, Any]:
        """The Open Inference Protocol model metadata, plus our serving hints under `parameters`."""
        hints = {
            "variant": self.metadata.variant,  # fp32, optimised or int8 (see `dlzoo optimise`)
            "task": self.metadata.task,
            "problem": self.problem,
            "labels": self.labels,
            "max_batch_size": self.max_batch_size,
            "preprocessing": self.preprocessing.to_json(),
        }
        if self.raw_datatype:
            raw_shape = [-1] if self.raw_datatype == "BYTES" else list(self.input.shape)
            hints["raw_input"] = {"name": self.input.name, "datatype": self.raw_datatype, "shape": raw_shape}
        return {
            "name": self.name,
            "versions": list(self.versions or (self.version,)),
            "platform": "onnxruntime_onnx",
            "inputs": [self.input.as_dict()],
            "outputs": [output.as_dict() for output in self.outputs],
            "parameters": hints,
        }


def session_options(intra_op_threads: int) -> onnxruntime.SessionOptions:
    """Every graph optimisation, and a fixed thread count so that concurrent runs share the cores."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return options


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def servable_names(root: Path) -> list[str]:
    """Entries with a version directory; hidden and half-written (`.name.tmp-*`) ones never count."""
    return sorted(
        path.name
        for path in root.iterdir()
        if NAME_PATTERN.fullmatch(path.name)
        and (path / repository.VERSION / repository.METADATA_FILE).is_file()
    )


def load_repository(
    root: Path, names: list[str] | None = None, overrides: Overrides | None = None
) -> dict[str, ServedModel]:
    """Every entry of the repository (or the named ones), each verified, warmed up, with a session."""
    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} does not exist; run `dvc repro` to export models")
    available = servable_names(root)
    wanted = names or available
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise RepositoryError(f"no model {', '.join(missing)} in {root}; available: {', '.join(available)}")
    if not wanted:
        raise RepositoryError(f"{root} holds no models (no <name>/1/metadata.json); run `dvc repro`")
    return {name: load_entry(root / name, overrides or Overrides()) for name in wanted}


def load_entry(model_dir: Path, overrides: Overrides) -> ServedModel:
    """Every version of one entry; returns the highest, which answers unversioned requests (as
    in Triton), holding the others."""
    versions = repository.versions(model_dir)
    loaded = [load_model(model_dir, overrides, version) for version in versions]
    loaded = [dataclasses.replace(model, versions=tuple(versions)) for model in loaded]
    return dataclasses.replace(loaded[-1], others=tuple(loaded[:-1]))


def _version_metadata(model_dir: Path, version: str) -> ExportMetadata:
    metadata = repository.read_metadata(model_dir, version)
    if metadata.version != version:
        raise RepositoryError(
            f"{model_dir / version / repository.METADATA_FILE} says version {metadata.version}; "
            f"rebuild the entry with `dvc repro repository@{model_dir.name}`"
        )
    return metadata


def _verified_model(version_dir: Path, metadata: ExportMetadata) -> bytes:
    payload = (version_dir / repository.MODEL_FILE).read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != metadata.onnx_sha256:
        raise RepositoryError(
            f"{version_dir / repository.MODEL_FILE}: SHA-256 {digest} does not match its metadata "
            f"({metadata.onnx_sha256}); the file was changed or half-written: re-export it with "
            f"`dvc repro repository@{version_dir.parent.name}`"
        )
    return payload


def load_model(model_dir: Path, overrides: Overrides, version: str = repository.VERSION) -> ServedModel:
    version_dir = model_dir / version
    metadata = _version_metadata(model_dir, version)
    config = overrides.apply(repository.read_config(model_dir))
    payload = _verified_model(version_dir, metadata)
    vocabulary = None
    if metadata.preprocessing.type == "text":
        vocabulary = Vocabulary.load(version_dir / metadata.preprocessing.vocabulary)
    session = onnxruntime.InferenceSession(
        payload, session_options(overrides.intra_op_threads), providers=["CPUExecutionProvider"]
    )
    model = ServedModel(
        name=model_dir.name,
        version=metadata.version,
        metadata=metadata,
        config=config,
        session=session,
        input=TensorSpec.from_metadata(metadata.inputs[0]),
        outputs=tuple(TensorSpec.from_metadata(entry) for entry in metadata.outputs),
        vocabulary=vocabulary,
    )
    seconds = warm_up(model)
    model = dataclasses.replace(
        model, inline_rows=min(model.max_batch_size, int(INLINE_RUN_SECONDS / seconds))
    )
    LOG.info(
        "loaded %s version %s (%s, %s, %d bytes, SHA-256 verified; one sample runs in %.3f ms)",
        model.name,
        model.version,
        metadata.variant,
        model.problem,
        len(payload),
        seconds * 1000,
    )
    return model


def warm_up(model: ServedModel, runs: int = 5) -> float:
    """Runs at load (ONNX Runtime allocates and tunes on the first call, not the first client's);
    returns the fastest time of one sample, in seconds."""
    sample = np.zeros((1, *model.input.shape[1:]), dtype=NUMPY_DTYPES[model.input.datatype])
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        model.run(sample)
        timings.append(time.perf_counter() - started)
    return min(timings)
