"""An exported model as ONNX Runtime runs it: its tensor names, a session, batched predictions.

The export stage checks parity with it and the evaluate stage scores the served file with it;
neither needs TensorFlow for that.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"
BATCH = 256  # samples per ONNX Runtime call when scoring a split


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are tf2onnx's, not the user's
    return options


def session(model: bytes | Path) -> ort.InferenceSession:
    payload = model if isinstance(model, bytes) else Path(model).read_bytes()
    return ort.InferenceSession(payload, session_options(), providers=["CPUExecutionProvider"])


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


def latency_ms(onnx_session: ort.InferenceSession, x: np.ndarray, runs: int) -> dict[str, float]:
    """p50 and p99 of one session run on `x`, in milliseconds, after two warm-up runs."""
    timings = timings_ms(onnx_session, x, runs)
    return {"p50": float(np.percentile(timings, 50)), "p99": float(np.percentile(timings, 99))}


def timings_ms(onnx_session: ort.InferenceSession, x: np.ndarray, runs: int) -> list[float]:
    feed = {INPUT_NAME: x.astype(input_dtype(onnx_session))}
    timings = []
    for run in range(runs + 2):
        started = time.perf_counter()
        onnx_session.run([OUTPUT_NAME], feed)
        if run >= 2:  # the first runs allocate and tune
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def cpu_flags() -> list[str]:
    """The CPU's vector extensions that ONNX Runtime's kernels use (INT8 speed depends on VNNI)."""
    wanted = {
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
        "neon",
        "asimd",
    }
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in lines if line.startswith(("flags", "Features"))), []
    )
    return sorted(wanted & set(flags))
