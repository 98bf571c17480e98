"""Dense MLP: moons, blobs and the MNIST regularisation variants."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from dlzoo.config.experiments import MlpConfig
from dlzoo.inputs import InputSpec
from dlzoo.models.common import model_input, output_layer, rescaled
from dlzoo.models.keras_family import KerasFamily


def build(config: MlpConfig, spec: InputSpec) -> keras.Model:
    inputs = model_input(spec)
    x = rescaled(inputs, spec)
    if len(spec.shape) > 1:
        x = layers.Flatten()(x)
    penalty = regularizers.L1L2(l1=config.l1, l2=config.l2) if config.l1 or config.l2 else None
    for units in config.hidden_units:
        if config.batch_norm:
            # Dense -> BatchNormalization -> activation, as the course places it.
            x = layers.Dense(units, kernel_regularizer=penalty)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation(config.activation)(x)
        else:
            x = layers.Dense(units, activation=config.activation, kernel_regularizer=penalty)(x)
        if config.dropout:
            x = layers.Dropout(config.dropout)(x)
    outputs = output_layer(config.output_units, config.output_activation)(x)
    return keras.Model(inputs, outputs, name="mlp")


FAMILY = KerasFamily("mlp", MlpConfig, build)
