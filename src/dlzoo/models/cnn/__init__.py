"""Convolutional network: the CIFAR-10 CNN, and the cats-vs-dogs baseline trained from scratch."""

from __future__ import annotations

import keras
from keras import layers

from dlzoo.config.experiments import CnnConfig
from dlzoo.inputs import InputSpec
from dlzoo.models.common import model_input, output_layer, rescaled
from dlzoo.models.keras_family import KerasFamily


def build(config: CnnConfig, spec: InputSpec) -> keras.Model:
    inputs = model_input(spec)
    x = rescaled(inputs, spec)
    if config.random_flip != "none":
        x = layers.RandomFlip(config.random_flip, name="random_flip")(x)
    if config.random_translation:
        shift = config.random_translation
        x = layers.RandomTranslation(shift, shift, fill_mode="reflect", name="random_translation")(x)
    for filters, pool in zip(config.conv_filters, config.pool_after, strict=True):
        x = layers.Conv2D(filters, config.kernel_size, activation=config.activation)(x)
        if pool:
            x = layers.MaxPooling2D(config.pool_size)(x)
    x = layers.Flatten()(x)
    for units in config.dense_units:
        x = layers.Dense(units, activation=config.activation)(x)
        if config.dropout:
            x = layers.Dropout(config.dropout)(x)
    outputs = output_layer(config.output_units, config.output_activation)(x)
    return keras.Model(inputs, outputs, name="cnn")


FAMILY = KerasFamily("cnn", CnnConfig, build)
