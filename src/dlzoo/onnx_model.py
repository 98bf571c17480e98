"""An exported model as ONNX Runtime runs it: its tensor names, a session, batched predictions.

The export stage checks parity with it and the evaluate stage scores the served file with it;
neither needs TensorFlow for that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"
BATCH = 256  # samples per ONNX Runtime call when scoring a split


def session(model: bytes | Path) -> ort.InferenceSession:
    payload = model if isinstance(model, bytes) else Path(model).read_bytes()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are tf2onnx's, not the user's
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def input_dtype(onnx_session: ort.InferenceSession) -> type:
    return np.int32 if onnx_session.get_inputs()[0].type == "tensor(int32)" else np.float32


def predict(onnx_session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """The model's outputs for every row of `x`, in batches."""
    dtype = input_dtype(onnx_session)
    parts = [
        onnx_session.run([OUTPUT_NAME], {INPUT_NAME: x[start : start + BATCH].astype(dtype)})[0]
        for start in range(0, len(x), BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float32)
