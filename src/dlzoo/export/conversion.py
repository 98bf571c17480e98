"""Export to ONNX and the parity gate: ONNX Runtime must agree with the trained model.

Keras models go through tf2onnx from a tf.function with an explicit input signature whose
batch dimension is dynamic (tf2onnx's `from_keras` fails on Sequential models under Keras 3,
and a signature pins names and dtypes). Recurrent layers are exported from a clone that does
not use cuDNN kernels, whose graph ops ONNX cannot express. The NumPy MLP is written with
onnx.helper directly. Either way `onnx.checker` must pass and predictions must agree.
"""

from __future__ import annotations

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from dlzoo.errors import DlzooError
from dlzoo.inputs import InputSpec
from dlzoo.records import Parity
from dlzoo.runtime import all_layers

OPSET = 17
INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"


class ParityError(DlzooError):
    """ONNX Runtime and the source model disagree; the message has the numbers."""


def exportable(model: keras.Model) -> keras.Model:
    """An equivalent float32 model whose LSTM/GRU layers never take the cuDNN path, same weights.

    cuDNN kernels have no ONNX equivalent, and a model trained with mixed precision computes in
    float16: the exported graph is the float32 version of the same weights (the parity gate then
    compares ONNX Runtime with this clone, and the export stage records how far the float16
    model was from it).
    """
    layers = all_layers(model)
    mixed = any(layer.dtype_policy.name != "float32" for layer in layers)
    if not mixed and not any(hasattr(layer, "use_cudnn") for layer in layers):
        return model

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model):  # nested sub-models (MobileNetV2, encoder/decoder)
            return keras.models.clone_model(layer, clone_function=clone_layer)
        config = layer.get_config()
        if hasattr(layer, "use_cudnn"):  # LSTM and GRU; their get_config() leaves it out
            config["use_cudnn"] = False
        if "dtype" in config:  # layers, not the graph's plain operations
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # also for sub-layers custom layers create
    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clone.set_weights(model.get_weights())
    return clone


def keras_to_onnx(model: keras.Model, spec: InputSpec, opset: int = OPSET) -> onnx.ModelProto:
    model = exportable(model)
    dtype = tf.int32 if spec.dtype == "int32" else tf.float32
    signature = (tf.TensorSpec((None, *spec.shape), dtype, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(inputs):
        return {OUTPUT_NAME: model(inputs, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    onnx.checker.check_model(proto)
    return proto


def session(proto: onnx.ModelProto | bytes) -> ort.InferenceSession:
    payload = proto if isinstance(proto, bytes) else proto.SerializeToString()
    return ort.InferenceSession(payload, providers=["CPUExecutionProvider"])


def predicted_classes(outputs: np.ndarray) -> np.ndarray | None:
    """Class ids from probabilities: argmax, or a 0.5 threshold for one sigmoid unit."""
    if outputs.ndim != 2:
        return None
    return outputs.argmax(axis=1) if outputs.shape[1] > 1 else (outputs[:, 0] >= 0.5).astype(np.int64)


def check_parity(
    onnx_session: ort.InferenceSession,
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
            f"ONNX Runtime disagrees with the trained model on {len(x)} test samples: max |difference| "
            f"{difference:.3g} (tolerance {tolerance:g}), {flips} predicted classes differ"
        )
    return parity
