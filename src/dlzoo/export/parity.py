"""The parity gate: ONNX Runtime must agree with the trained model on validation samples."""

from __future__ import annotations

import numpy as np
import onnxruntime

from dlzoo import problems
from dlzoo.errors import DlzooError
from dlzoo.onnx_model import INPUT_NAME, OUTPUT_NAME
from dlzoo.records import Parity


class ParityError(DlzooError):
    """ONNX Runtime and the source model disagree; the message has the numbers."""


def predicted_classes(outputs: np.ndarray) -> np.ndarray | None:
    """Class ids by the project's one rule (`problems.predicted_classes`); None if not (n, classes)."""
    return problems.predicted_classes(outputs) if outputs.ndim == 2 else None


def check_parity(
    onnx_session: onnxruntime.InferenceSession,
    expected: np.ndarray,
    x: np.ndarray,
    tolerance: float,
    *,
    classify: bool,
) -> Parity:
    """Raises ParityError unless ONNX Runtime matches `expected` within `tolerance` (and classes)."""
    actual = onnx_session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    if actual.shape != expected.shape:
        raise ParityError(f"ONNX output shape {actual.shape} != reference output shape {expected.shape}")
    difference = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    agree = True
    if classify:
        agree = bool(np.array_equal(predicted_classes(actual), predicted_classes(expected)))
    parity = Parity(samples=len(x), max_abs_diff=difference, tolerance=tolerance, classes_agree=agree)
    if difference > tolerance or not agree:
        flips = int(np.sum(predicted_classes(actual) != predicted_classes(expected))) if classify else 0
        raise ParityError(
            f"ONNX Runtime disagrees with the trained model on {len(x)} validation samples: max |difference| "
            f"{difference:.3g} (tolerance {tolerance:g}), {flips} predicted classes differ"
        )
    return parity
