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
from dlzoo.store import load_json


@dataclass(frozen=True)
class Exported:
    """One exported model: the ONNX bytes, the metadata a server needs, and the files beside it."""

    onnx_bytes: bytes
    metadata: dict[str, Any]
    files: dict[str, bytes]


def run(name: str, params: Params, model_dir: Path, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    experiment = params.experiment(name)
    summary = load_json(model_dir / "summary.json")
    family = models.family(experiment.family)
    model = family.load(model_dir)
    exported = export_model(name, experiment.task, family, model, data_dir, params.export)
    metadata = {
        **exported.metadata,
        "parameters": summary["parameters"],
        "mlflow_run_id": summary["mlflow_run_id"],
    }
    repository.write_export(out_dir, exported.onnx_bytes, metadata, exported.files)
    _register(summary["mlflow_run_id"], name, exported.onnx_bytes, metadata["parity"]["max_abs_diff"])
    return metadata


def export_model(
    name: str, task: str, family: Family, model: Any, data_dir: Path, settings: ExportSettings
) -> Exported:
    """Converts a trained model to ONNX and checks it on the data set's test samples."""
    info = load_info(data_dir)
    kind = problems.task_kind(info, family.reconstructs)
    x, _ = load_split(data_dir, "test")
    spec = InputSpec.from_info(info)
    x_model = x[: settings.parity_samples].astype(np.int32 if spec.dtype == "int32" else np.float32)
    converted = family.to_onnx(model, spec, settings.opset, x_model)
    if converted.note:
        print(f"{name}: {converted.note}")
    proto, expected = converted.proto, converted.expected
    payload = proto.SerializeToString()
    parity = conversion.check_parity(
        conversion.session(payload),
        expected,
        x_model,
        settings.tolerance,
        classify=kind in ("binary", "multiclass"),
    )
    metadata = {
        "name": name,
        "version": repository.VERSION,
        "task": task,
        "family": family.name,
        "kind": kind,
        "profile": info["profile"],
        "stand_in": info["stand_in"],
        "inputs": [repository.tensor(conversion.INPUT_NAME, spec.dtype, list(spec.shape))],
        "outputs": [repository.tensor(conversion.OUTPUT_NAME, "float32", list(expected.shape[1:]))],
        "labels": info.get("classes"),
        "preprocessing": preprocessing_metadata(info, spec),
        "onnx_sha256": hashlib.sha256(payload).hexdigest(),
        "onnx_bytes": len(payload),
        "opset": settings.opset,
        "parity": parity.as_dict(),
        "onnxruntime_version": onnxruntime.__version__,
    }
    files = {}
    if "vocabulary" in info.get("input", {}):
        files[repository.VOCABULARY_FILE] = (data_dir / info["input"]["vocabulary"]).read_bytes()
    return Exported(payload, metadata, files)


def preprocessing_metadata(info: dict[str, Any], spec: InputSpec) -> dict[str, Any]:
    """What the server must do to raw inputs; recorded beside the model so the server needs nothing else."""
    settings = info.get("input", {})
    if "vocabulary" in settings:
        return {
            "type": "text",
            "tokenizer": "dlzoo.data.text.tokenize",
            "vocabulary": repository.VOCABULARY_FILE,
            **{
                key: settings[key]
                for key in (
                    "vocab_size",
                    "max_length",
                    "padding",
                    "truncating",
                    "pad_id",
                    "start_id",
                    "oov_id",
                )
            },
        }
    if spec.scale is not None:
        return {
            "type": "image",
            "shape": list(spec.shape),
            "raw_dtype": "UINT8",
            "note": "send raw pixels (0-255) as FP32, or UINT8: the model rescales and resizes itself",
        }
    return {"type": "tensor"}


def _register(run_id: str, name: str, onnx_bytes: bytes, max_abs_diff: float) -> None:
    with track.resume_run(run_id):
        mlflow.log_metrics({"onnx_parity_max_abs_diff": max_abs_diff})
        mlflow.onnx.log_model(
            onnx.load_from_string(onnx_bytes),
            name="onnx",
            registered_model_name=f"dlzoo-{name}",
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        )
