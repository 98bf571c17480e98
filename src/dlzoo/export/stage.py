"""The export stage: ONNX model, parity gate, metadata for serving (the track stage registers it).

The ONNX bytes are canonical (dlzoo.export.canonical), so the same weights give the same file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from dlzoo import models, onnx_model, problems, repository
from dlzoo.config import Params
from dlzoo.config.experiments import ExportSettings
from dlzoo.data.splits import load_info, load_split
from dlzoo.export import parity
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Family
from dlzoo.records import (
    SUMMARY_FILE,
    DataInfo,
    ExportMetadata,
    ImagePreprocessing,
    Preprocessing,
    TensorPreprocessing,
    TextInput,
    TextPreprocessing,
    TrainSummary,
)


@dataclass(frozen=True)
class Trained:
    """A trained model, its family and what the train stage recorded about it."""

    family: Family
    model: Any
    summary: TrainSummary
    sha256: str  # of the model file the train stage wrote


@dataclass(frozen=True)
class Exported:
    """One exported model: the ONNX bytes, the metadata a server needs, and the files beside it."""

    onnx_bytes: bytes
    metadata: ExportMetadata
    files: dict[str, bytes]


def run(name: str, params: Params, model_dir: Path, data_dir: Path, out_dir: Path) -> ExportMetadata:
    family = models.family(params.experiment(name).family)
    summary = TrainSummary.read(model_dir / SUMMARY_FILE)
    sha256 = hashlib.sha256((model_dir / summary.model_file).read_bytes()).hexdigest()
    exported = export_model(Trained(family, family.load(model_dir), summary, sha256), data_dir, params.export)
    repository.write_export(out_dir, exported.onnx_bytes, exported.metadata, exported.files)
    return exported.metadata


def export_model(trained: Trained, data_dir: Path, settings: ExportSettings) -> Exported:
    """Converts a trained model to ONNX and checks it on validation samples."""
    info, summary = load_info(data_dir), trained.summary
    problem = problems.solved(info.problem, trained.family.reconstructs)
    spec = InputSpec.from_info(info)
    x = load_split(data_dir, "val")[0][: settings.parity_samples]  # the test split is for evaluate
    x = x.astype(np.int32 if spec.dtype == "int32" else np.float32)
    converted = trained.family.to_onnx(trained.model, spec, settings.opset, x)
    if converted.note:
        print(f"{summary.experiment}: {converted.note}")
    payload = converted.proto.SerializeToString()
    classify = problem in problems.CLASSIFICATION
    checked = parity.check_parity(
        onnx_model.session(payload), converted.expected, x, settings.tolerance, classify=classify
    )
    metadata = ExportMetadata(
        name=summary.experiment,
        version=repository.VERSION,
        task=summary.task,
        family=summary.family,
        problem=problem,
        profile=info.profile,
        stand_in=info.stand_in,
        inputs=[repository.tensor(onnx_model.INPUT_NAME, spec.dtype, list(spec.shape))],
        outputs=[repository.tensor(onnx_model.OUTPUT_NAME, "float32", list(converted.expected.shape[1:]))],
        labels=info.classes,
        preprocessing=preprocessing_metadata(info, spec),
        onnx_sha256=hashlib.sha256(payload).hexdigest(),
        onnx_bytes=len(payload),
        opset=settings.opset,
        parity=checked,
        onnxruntime_version=onnxruntime.__version__,
        parameters=summary.parameters,
        source_sha256=trained.sha256,
        training_variant=summary.training_variant,
    )
    files = {}
    if isinstance(info.input, TextInput):
        files[repository.VOCABULARY_FILE] = (data_dir / info.input.vocabulary).read_bytes()
    return Exported(payload, metadata, files)


def preprocessing_metadata(info: DataInfo, spec: InputSpec) -> Preprocessing:
    """What the server must do to raw inputs; recorded beside the model so the server needs nothing else."""
    if isinstance(info.input, TextInput):
        settings = info.input.model_dump(exclude={"vocabulary"})
        return TextPreprocessing(
            type="text",
            tokenizer="dlzoo.data.text.tokenize",
            vocabulary=repository.VOCABULARY_FILE,
            **settings,
        )
    if spec.scale is not None:
        return ImagePreprocessing(
            type="image",
            shape=list(spec.shape),
            raw_dtype="UINT8",
            note="send raw pixels (0-255) as FP32, or UINT8: the model rescales and resizes itself",
        )
    return TensorPreprocessing(type="tensor")
