"""What a model's outputs mean: the kind of problem it solves, and its outputs as class probabilities.

NumPy only: the evaluate and export stages and the server all read outputs this way, and the
server must not load scikit-learn (or TensorFlow) to do it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def task_kind(info: dict[str, Any], reconstructs: bool) -> str:
    """How a model is scored: a family that gives back its input is scored on reconstruction."""
    if reconstructs:
        return "reconstruction"
    return {"binary_classification": "binary", "multiclass_classification": "multiclass"}.get(
        info["task"], "regression"
    )


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """(n, classes) probabilities from a model's outputs: one sigmoid unit becomes two columns."""
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.hstack([1.0 - outputs, outputs])
    return outputs
