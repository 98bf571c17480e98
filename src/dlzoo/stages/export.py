"""The export stage: ONNX model, parity gate, Triton-style repository entry, MLflow registry."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
import onnxruntime

from dlzoo import evaluate as scoring
from dlzoo import export, repository, tracking
from dlzoo.config import Params
from dlzoo.data.splits import load_info, load_split
from dlzoo.data.store import atomic_directory, load_json
from dlzoo.models.inputs import InputSpec
from dlzoo.scratch.mlp import NumpyMLP
from dlzoo.stages.evaluate import load_trained


def run(name: str, params: Params, model_dir: Path, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    experiment, settings = params.experiment(name), params.export
    info, summary = load_info(data_dir), load_json(model_dir / "summary.json")
    kind = scoring.task_kind(info, experiment.family)
    model = load_trained(model_dir)
    x, _ = load_split(data_dir, "test")
    x = x[: settings.parity_samples]
    spec = InputSpec.from_info(info)
    x_model = x.astype(np.int32 if spec.dtype == "int32" else np.float32)
    if isinstance(model, NumpyMLP):
        proto = export.numpy_mlp_to_onnx(model)
        expected = model.predict_proba(x.astype(np.float64))
    else:
        proto = export.keras_to_onnx(model, spec, settings.opset)
        reference = export.exportable(model)  # float32, no cuDNN: what the ONNX graph computes
        expected = reference.predict(x_model, batch_size=256, verbose=0)
        if reference is not model:
            trained = model.predict(x_model, batch_size=256, verbose=0)
            print(
                f"{name}: the trained model (float16 compute or cuDNN) vs its float32 clone: max |diff| "
                f"{float(np.abs(trained - expected).max()):.2e}"
            )
    payload = proto.SerializeToString()
    parity = export.check_parity(
        export.session(payload),
        expected,
        x_model,
        settings.tolerance,
        classify=kind in ("binary", "multiclass"),
    )
    metadata = _metadata(name, experiment, info, summary, kind, spec, expected, payload, parity, settings)
    extra = {}
    if "vocabulary" in info.get("input", {}):
        extra[repository.VOCABULARY_FILE] = (data_dir / info["input"]["vocabulary"]).read_bytes()
    with atomic_directory(out_dir) as staging:
        repository.write_entry(staging, name, payload, metadata, extra)
    _register(summary["mlflow_run_id"], name, proto, parity)
    return metadata


def _metadata(
    name, experiment, info, summary, kind, spec, expected, payload, parity, settings
) -> dict[str, Any]:
    return {
        "name": name,
        "version": repository.VERSION,
        "task": experiment.task,
        "family": experiment.family,
        "kind": kind,
        "profile": info["profile"],
        "stand_in": info["stand_in"],
        "inputs": [repository.tensor(export.INPUT_NAME, spec.dtype, list(spec.shape))],
        "outputs": [repository.tensor(export.OUTPUT_NAME, "float32", list(expected.shape[1:]))],
        "labels": info.get("classes"),
        "preprocessing": preprocessing_metadata(info, spec),
        "max_batch_size": settings.max_batch_size,
        "onnx_sha256": hashlib.sha256(payload).hexdigest(),
        "onnx_bytes": len(payload),
        "opset": settings.opset,
        "parity": parity.as_dict(),
        "parameters": summary["parameters"],
        "mlflow_run_id": summary["mlflow_run_id"],
        "onnxruntime_version": onnxruntime.__version__,
    }


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


def _register(run_id: str, name: str, proto: onnx.ModelProto, parity: export.Parity) -> None:
    with tracking.resume_run(run_id):
        mlflow.log_metrics({"onnx_parity_max_abs_diff": parity.max_abs_diff})
        mlflow.onnx.log_model(
            proto,
            name="onnx",
            registered_model_name=f"dlzoo-{name}",
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        )
