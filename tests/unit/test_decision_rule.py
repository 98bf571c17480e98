"""One decision rule for turning outputs into classes, the same on every code path, ties included.

A sigmoid output of exactly 0.5 (or equal softmax scores) goes to the lower class index. The
NumPy MLP with zero weights outputs exactly sigmoid(0) = 0.5, so every path can be fed a real tie.
"""

from __future__ import annotations

import numpy as np
import pytest

from dlzoo import onnx_model, problems
from dlzoo.evaluate import scoring
from dlzoo.export import parity
from dlzoo.models.scratch_mlp.numpy_mlp import NumpyMLP
from dlzoo.models.scratch_mlp.onnx_graph import to_onnx
from dlzoo.serve.protocol import classify

X = np.array([[0.3, -1.2], [2.0, 0.5]], dtype=np.float32)


def _tied_binary_mlp() -> NumpyMLP:
    return NumpyMLP(
        weights=[np.zeros((2, 3)), np.zeros((3, 1))], biases=[np.zeros(3), np.zeros(1)], activation="relu"
    )


def test_the_rule_sends_ties_to_the_lower_class_and_decides_everything_else_by_the_larger_score():
    sigmoid = np.array(
        [[0.5], [np.nextafter(np.float32(0.5), np.float32(1))], [0.49], [0.9]], dtype=np.float32
    )
    np.testing.assert_array_equal(problems.predicted_classes(sigmoid), [0, 1, 0, 1])
    softmax = np.array([[0.5, 0.5], [0.2, 0.8], [1 / 3, 1 / 3 + 1e-7]], dtype=np.float32)
    np.testing.assert_array_equal(problems.predicted_classes(softmax), [0, 1, 1])
    three_way_tie = np.full((1, 3), 1 / 3, dtype=np.float32)
    np.testing.assert_array_equal(problems.predicted_classes(three_way_tie), [0])


def test_numpy_mlp_onnx_scoring_parity_and_serving_agree_at_exactly_one_half():
    mlp = _tied_binary_mlp()
    np.testing.assert_array_equal(mlp.predict_proba(X), 0.5)
    assert mlp.predict(X).tolist() == [0, 0]
    session = onnx_model.session(
        to_onnx(mlp, 17, onnx_model.INPUT_NAME, onnx_model.OUTPUT_NAME).SerializeToString()
    )
    outputs = onnx_model.predict(session, X)
    np.testing.assert_array_equal(outputs, 0.5)
    assert parity.predicted_classes(outputs).tolist() == [0, 0]
    scores = scoring.classification_metrics(outputs, np.array([0, 0]), ["negative", "positive"])
    assert scores["accuracy"] == 1.0
    assert scores["confusion_matrix"] == [[2, 0], [0, 0]]
    top = classify(outputs, 1, ["negative", "positive"])
    assert top[:, 0].tolist() == ["0.500000:0:negative", "0.500000:0:negative"]


@pytest.mark.parametrize(
    ("metric", "outputs"),
    [("BinaryAccuracy", [[0.5]]), ("SparseCategoricalAccuracy", [[0.5, 0.5]])],
)
def test_keras_training_metrics_count_a_tie_as_the_lower_class(metric: str, outputs: list):
    import keras

    tied = np.array(outputs, dtype=np.float32)
    accuracy = getattr(keras.metrics, metric)()
    accuracy.update_state(np.array([0]), tied)
    assert float(accuracy.result()) == 1.0
    assert problems.predicted_classes(tied).tolist() == [0]
