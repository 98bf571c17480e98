"""Export to ONNX and the parity gate: ONNX Runtime must agree with the trained model.

Keras models go through tf2onnx from a tf.function with an explicit input signature whose
batch dimension is dynamic (tf2onnx's `from_keras` fails on Sequential models under Keras 3,
and a signature pins names and dtypes). Recurrent layers are exported from a clone that does
not use cuDNN kernels, whose graph ops ONNX cannot express. The NumPy MLP is written with
onnx.helper directly (dlzoo.models.scratch_mlp.onnx_graph).
"""

from __future__ import annotations

import keras
import onnx
import tensorflow as tf
import tf2onnx

from dlzoo.export.canonical import canonical
from dlzoo.inputs import InputSpec
from dlzoo.onnx_model import INPUT_NAME, OUTPUT_NAME
from dlzoo.runtime import all_layers

OPSET = 17


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
    proto = canonical(proto)  # tf2onnx's names and order vary from run to run
    onnx.checker.check_model(proto)
    return proto
