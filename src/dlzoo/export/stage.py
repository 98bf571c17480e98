"""The export stage: ONNX model, parity gate, metadata for serving, MLflow registry."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
import onnxruntime

from dlzoo import models, problems, repository, track
from dlzoo.config import Params
from dlzoo.config.experiments import ExportSettings
from dlzoo.data.splits import load_info, load_split
from dlzoo.export import conversion
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


@dataclass(frozen=True)
class Exported:
    """One exported model: the ONNX bytes, the metadata a server needs, and the files beside it."""

    onnx_bytes: bytes
    metadata: ExportMetadata
    files: dict[str, bytes]


def run(name: str, params: Params, model_dir: Path, data_dir: Path, out_dir: Path) -> ExportMetadata:
    experiment = params.experiment(name)
    family = models.family(experiment.family)
    summary = TrainSummary.read(model_dir / SUMMARY_FILE)
    exported = export_model(Trained(family, family.load(model_dir), summary), data_dir, params.export)
    repository.write_export(out_dir, exported.onnx_bytes, exported.metadata, exported.files)
    _register(summary.mlflow_run_id, name, exported.onnx_bytes, exported.metadata.parity.max_abs_diff)
    return exported.metadata


def export_model(trained: Trained, data_dir: Path, settings: ExportSettings) -> Exported:
    """Converts a trained model to ONNX and checks it on the data set's test samples."""
    info, summary = load_info(data_dir), trained.summary
    problem = problems.solved(info.problem, trained.family.reconstructs)
    spec = InputSpec.from_info(info)
    x = load_split(data_dir, "test")[0][: settings.parity_samples]
    x = x.astype(np.int32 if spec.dtype == "int32" else np.float32)
    converted = trained.family.to_onnx(trained.model, spec, settings.opset, x)
    if converted.note:
        print(f"{summary.experiment}: {converted.note}")
    payload = converted.proto.SerializeToString()
    classify = problem in problems.CLASSIFICATION
    parity = conversion.check_parity(
        conversion.session(payload), converted.expected, x, settings.tolerance, classify=classify
    )
    metadata = ExportMetadata(
        name=summary.experiment,
        version=repository.VERSION,
        task=summary.task,
        family=summary.family,
        problem=problem,
        profile=info.profile,
        stand_in=info.stand_in,
        inputs=[repository.tensor(conversion.INPUT_NAME, spec.dtype, list(spec.shape))],
        outputs=[repository.tensor(conversion.OUTPUT_NAME, "float32", list(converted.expected.shape[1:]))],
        labels=info.classes,
        preprocessing=preprocessing_metadata(info, spec),
        onnx_sha256=hashlib.sha256(payload).hexdigest(),
        onnx_bytes=len(payload),
        opset=settings.opset,
        parity=parity,
        onnxruntime_version=onnxruntime.__version__,
        parameters=summary.parameters,
        mlflow_run_id=summary.mlflow_run_id,
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


def _register(run_id: str, name: str, onnx_bytes: bytes, max_abs_diff: float) -> None:
    with track.resume_run(run_id):
        mlflow.log_metrics({"onnx_parity_max_abs_diff": max_abs_diff})
        mlflow.onnx.log_model(
            onnx.load_from_string(onnx_bytes),
            name="onnx",
            registered_model_name=f"dlzoo-{name}",
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        )
