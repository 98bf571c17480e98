"""What a model's outputs mean: the problem it solves, and its outputs as class probabilities.

NumPy only: the evaluate and export stages and the server all read outputs this way, and the
server must not load scikit-learn (or TensorFlow) to do it.
"""

from __future__ import annotations

import numpy as np

CLASSIFICATION = ("binary", "multiclass")


def solved(data_problem: str, reconstructs: bool) -> str:
    """The problem a model solves: its data's, unless the family is trained to give back its input."""
    return "reconstruction" if reconstructs else data_problem


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class ids from a classifier's (n, classes) or (n, 1) outputs: the one decision rule.

    A tie goes to the lower class index: a sigmoid output of exactly 0.5 is class 0, as Keras'
    BinaryAccuracy (threshold 0.5, strictly greater) counts it, as argmax picks the first of equal
    scores, and as the classification extension's stable sort lists them.
    """
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return outputs.argmax(axis=1).astype(np.int64)


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """(n, classes) probabilities from a model's outputs: one sigmoid unit becomes two columns."""
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.hstack([1.0 - outputs, outputs])
    return outputs
